"""The Dockerfile: linted by hadolint, and its promises asserted one by one.

No image is built here (that needs a Docker daemon and the base image from Docker Hub); what
can be checked without one is: hadolint's rules, multi-stage with a pinned base shared by
both stages, a final stage that copies only the virtualenv and runs as UID 10001, the
HEALTHCHECK's Python actually telling a healthy /healthz from an unhealthy one, the
entrypoint and command parsing with the real CLI, and a .dockerignore that keeps the build
context to what the build copies.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.promql import REPO, free_port, require

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV = "/opt/registry-watcher"
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, "dangling line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions grouped by stage (each starting with its FROM)."""
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        assert result, "instructions before the first FROM"
        result[-1].append(ins)
    return result


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def test_hadolint(tmp_path: Path) -> None:
    hadolint = require("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # no stray .hadolint.yaml from the repo's parents
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_one_pinned_base(instructions: list[Instruction]) -> None:
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, "multi-stage: a builder and a final stage"
    bases = []
    for stage in all_stages:
        image, *_alias = stage[0].args.split()
        assert PINNED_BASE.fullmatch(image), f"{image}: pin a full Python version tag"
        assert "$" not in image and "latest" not in image
        bases.append(image)
    assert len(set(bases)) == 1, "the virtualenv links to the base's interpreter: one base"
    builder = all_stages[0][0].args.split()
    assert [w.lower() for w in builder[1:]] == ["as", "builder"]
    assert len(all_stages[-1][0].args.split()) == 1, "the final stage is unnamed and last"


def test_base_python_matches_the_project() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    match = PINNED_BASE.search(DOCKERFILE.read_text())
    assert match is not None
    minor = re.search(r"python:(\d+\.\d+)", match.group(0))
    assert minor is not None
    assert pyproject["project"]["requires-python"] == f">={minor.group(1)}"


def test_final_stage_gets_the_venv_only(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    copies = [i for i in final if i.keyword in ("COPY", "ADD")]
    assert [c.args for c in copies] == [f"--from=builder {VENV} {VENV}"]
    for ins in final:
        if ins.keyword == "RUN":
            assert not re.search(r"apt-get|apk|pip |gcc|build-essential|make ", ins.args), ins


def test_no_compilers_anywhere(instructions: list[Instruction]) -> None:
    for ins in instructions:
        if ins.keyword == "RUN":
            assert not re.search(r"apt-get install|gcc|g\+\+|build-essential|clang", ins.args)
    builder = stages(instructions)[0]
    install = [i for i in builder if i.keyword == "RUN" and "pip install" in i.args]
    assert install and all("--only-binary=:all:" in i.args for i in install)
    assert all("--no-cache-dir" in i.args for i in install)


def test_runs_as_uid_10001(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    user = [i for i in final if i.keyword == "USER"]
    assert user, "the final stage sets USER"
    uid = user[-1].args.split(":")[0]
    assert uid == "10001", "numeric, so runAsNonRoot can verify it"
    # Nothing runs as root after the USER switch.
    after = final[final.index(user[-1]) :]
    assert not [i for i in after if i.keyword == "RUN"]


def test_entrypoint_cmd_expose(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    assert json.loads(_only(final, "ENTRYPOINT").args) == ["registry-watcher"]
    assert json.loads(_only(final, "CMD").args) == [
        "run", "-c", "/etc/registry-watcher/config.yaml",
    ]  # fmt: skip
    assert _only(final, "EXPOSE").args == "8080"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "registry-watcher" in scripts


def test_the_cmd_parses_with_the_real_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watcher", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "-c" in result.stdout


def _healthcheck_code(instructions: list[Instruction]) -> list[str]:
    final = stages(instructions)[-1]
    check = _only(final, "HEALTHCHECK").args
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert isinstance(argv, list), "exec form: no shell needed"
    assert argv[:2] == ["python", "-c"]
    assert "urllib" in argv[2] and "http://127.0.0.1:8080/healthz" in argv[2]
    assert "curl" not in check and "wget" not in check
    return list(argv)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run_healthcheck(argv: list[str], port: int) -> int:
    code = argv[2].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


def test_healthcheck_tells_healthy_from_unhealthy(
    instructions: list[Instruction], health_server: tuple[int, type[_Health]]
) -> None:
    argv = _healthcheck_code(instructions)
    port, handler = health_server
    assert _run_healthcheck(argv, port) == 0
    handler.status = 503
    assert _run_healthcheck(argv, port) == 1
    assert _run_healthcheck(argv, free_port()) == 1  # nothing listening


def test_dockerignore_keeps_the_context_to_what_is_copied(
    instructions: list[Instruction],
) -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then re-include what the build needs"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = set()
    for ins in instructions:
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            *srcs, _dest = ins.args.split()
            sources |= {s.rstrip("/") for s in srcs}
    assert sources == included, "re-include exactly what COPY uses"
    for src in sources:
        assert (REPO / src).exists(), src
