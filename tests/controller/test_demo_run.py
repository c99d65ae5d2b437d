"""``loaxa-controller run --demo`` (what ``make run`` starts): the controller, its embedded broker and the
demo's six receivers in a process of their own, reachable in a browser, all gone after a stop.

Run as a newcomer would: a real process on a free port, with a fresh var directory.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

RECEIVERS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOAXA_VAR_DIR": str(tmp_path / "var"), "LOAXA_HTTP_PORT": str(port),
           "LOAXA_PUBLIC_URL": f"http://127.0.0.1:{port}", "LOAXA_TTS_GTTS_URL": "http://127.0.0.1:9/"}
    for key in [k for k in env if k in ("LOAXA_DATABASE_URL", "LOAXA_MQTT_URL", "LOAXA_CONFIG")]:
        del env[key]
    with open(tmp_path / "run.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", "from controller.cli import main; main()", "run", "--demo"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log)


def _online(base: str, login: tuple[str, str]) -> int:
    try:
        resp = requests.get(f"{base}/api/v1/receivers", auth=login, timeout=5)
    except requests.RequestException:
        return 0
    if resp.status_code != 200:
        return 0
    return sum(1 for r in resp.json()["receivers"] if r.get("online") is True)


@pytest.mark.parametrize("stop", ["term", "kill"])
def test_demo_runs_receivers_in_their_own_process(tmp_path: Path, stop: str) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    sims: list[int] = []
    children: list[int] = []
    try:
        admin = tmp_path / "var" / "demo-admin.txt"
        user, password = _wait(lambda: admin.exists() and admin.read_text().split(), 90, "the demo admin login")
        assert _wait(lambda: requests.get(f"{base}/login", timeout=5).status_code == 200, 30, "the login page")
        _wait(lambda: _online(base, (user, password)) == RECEIVERS, 90, "six receivers online")
        children = _children(proc.pid)  # the demo receivers, the embedded broker and Icecast
        # By its arguments (`python -m receiver ... sim`), not by any path that happens to hold the word.
        sims = [c for c in children
                if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"receiver"]]
        assert len(sims) == 1, "the demo receivers run as one child process"
        # The controller itself holds no receiver code: it never imported the receiver package.
        modules = json.loads(subprocess.run(
            [sys.executable, "-c", "import json, sys; import controller.cli, controller.demo, controller.runtime; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'receiver')))"],
            capture_output=True, text=True, check=True, timeout=60).stdout)
        assert modules == []
        if stop == "term":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0 or proc.returncode in (0, -signal.SIGTERM)
            _wait(lambda: not any(_alive(pid) for pid in children), 30, "the broker and the receivers to stop")
        else:
            proc.kill()  # no clean-up in the controller: the simulator notices its parent is gone
            proc.wait(30)
        _wait(lambda: not any(_alive(pid) for pid in sims), 30, "the demo receivers to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        # After kill -9 the embedded broker is an orphan (systemd would kill the unit's cgroup): not left behind.
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_controller_imports_nothing_from_the_receiver() -> None:
    """Not at the top of a module nor inside a function: the server installs without receiver/'s packages."""
    root = Path(__file__).resolve().parents[2] / "controller"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(root.parent)}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] == "receiver"]
    assert found == []
