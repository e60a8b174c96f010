"""Logging set up once, at the edge: structlog JSON on stderr (or console for humans).

Every log line is one event name plus fields. Processors never see secrets because nothing
passes them in: credentials are redacted in their reprs and never logged as values.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


def configure_logging(fmt: LogFormat = "json", level: str = "info") -> None:
    """Configure structlog and stdlib logging to write to stderr in one format."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # sigstore-python and aiohttp log through stdlib; keep them quiet unless debugging.
    logging.basicConfig(stream=sys.stderr, level=max(numeric, logging.WARNING))
