"""`registry-watcher run` as a real process: ready, reload on SIGHUP, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp

from tests.daemon.conftest import daemon_config
from tests.services import free_port


async def _get(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


async def _wait(cond, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)  # poll interval inside the deadline loop
    raise AssertionError("condition not met in time")


async def test_run_reload_and_terminate(
    tmp_path: Path, registry_url: str, trusted_root_path: Path
) -> None:
    port = free_port()
    host = registry_url.removeprefix("http://")
    config = daemon_config(tmp_path, registry_url, host, port, trusted_root_path)
    log = (tmp_path / "daemon.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "run",
        "-c",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait(lambda: _ready(base))
        good = config.read_text()
        config.write_text("registries: [{name: broken}]\n")
        proc.send_signal(signal.SIGHUP)
        await _wait(lambda: _logged(tmp_path, "config_reload_rejected"))
        assert await _get(base + "/readyz") == 200  # the old config keeps running
        config.write_text(good.replace("name: late", "name: later"))
        proc.send_signal(signal.SIGHUP)
        await _wait(lambda: _logged(tmp_path, "config_reloaded"))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
        text = (tmp_path / "daemon.log").read_text()
        assert '"event": "daemon_stopped"' in text
        assert "s3cret" not in text  # the webhook secret never reaches the logs
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("registries:\n  - name: x\n    url: ftp://nope\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "run",
        "-c",
        str(bad),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2 and b"bad.yaml:3" in err


async def _ready(base: str) -> bool:
    return await _get(base + "/readyz") == 200


async def _logged(tmp: Path, event: str) -> bool:
    return f'"event": "{event}"' in (tmp / "daemon.log").read_text()
