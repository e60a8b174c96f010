"""Go-style durations (``90s``, ``2m``, ``1h30m``, ``500ms``), as the contract promises.

The configuration borrows its vocabulary from Kubernetes and policy-controller, whose users
write durations the way Go's ``time.ParseDuration`` reads them; accepting exactly that syntax
(and nothing looser, such as bare numbers or ISO 8601) means a value that works there works
here, and a typo such as ``5 minutes`` is an error instead of a silent guess.
"""

from __future__ import annotations

import re
from datetime import timedelta

HINT = "want Go-style like 90s, 2m, 1h"

# Go's units, in nanoseconds. Both micro signs are accepted, as Go does.
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_NS_PER_US = 1_000


def parse_duration(text: object) -> timedelta:
    """Parse a Go duration string into a timedelta.

    Accepts what ``time.ParseDuration`` accepts: an optional sign, then one or more
    ``<number><unit>`` parts (``1h30m``, ``1.5s``), or the bare ``0``. Bare numbers other than
    zero are rejected because the unit is the whole point: ``60`` could mean seconds or
    minutes. Precision below a microsecond is truncated (timedelta's resolution).

    Raises ValueError whose message quotes the input and says what is wanted.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"invalid duration {text!r} ({HINT})")
    raw = str(text)
    body = raw
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        raise ValueError(f"invalid duration {raw!r} ({HINT})")
    total_ns = 0
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {raw!r} ({HINT})")
        number, unit = match.group(1), match.group(2)
        whole, _, frac = number.partition(".")
        scale = _UNITS_NS[unit]
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    return timedelta(microseconds=sign * (total_ns // _NS_PER_US))


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go's ``Duration.String`` does (``1h30m0s``, ``500ms``).

    Used wherever a duration is shown back to a user or hashed, so that it reads in the same
    syntax it was written in and round-trips through :func:`parse_duration`.
    """
    us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if us == 0:
        return "0s"
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us < 1_000:
        return f"{sign}{us}\u00b5s"
    if us < 1_000_000:
        return f"{sign}{_trim(us, 1_000)}ms"
    hours, rest = divmod(us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{_trim(rest, 1_000_000)}s"


def _trim(amount: int, unit: int) -> str:
    """``amount/unit`` as a decimal without trailing zeros (``1500, 1000`` -> ``1.5``)."""
    whole, frac = divmod(amount, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
