"""The embedded MQTT broker used when no ``MQTT_URL`` is configured.

Mosquitto is started on a free loopback port when its binary is found;
otherwise the pure-Python amqtt broker runs in this process (it keeps retained
messages and wills, but not a persistent session's missed messages, so
receivers re-subscribe on every connect and rely on retained manifests).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    """The mosquitto binary on PATH or in /usr/sbin, or None."""
    env = os.environ.get("LOAXA_MOSQUITTO")
    if env:
        return env
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """True once something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """A loopback broker owned by this process; ``url`` is where it listens."""

    def __init__(self, workdir: Path | None = None, *, persistent: bool = False,
                 password_file: Path | None = None, acl_file: Path | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="loaxa-broker-"))
        self.persistent = persistent  # keep retained messages and sessions across a stop/start
        # Mosquitto only: logins from this file (re-read on reload()), topics limited by the ACL file.
        self.password_file = password_file
        self.acl_file = acl_file
        self.port = 0
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._amqtt: Any = None  # amqtt.broker.Broker, imported only when there is no Mosquitto (no type information)

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, prefer: str = "mosquitto") -> EmbeddedBroker:
        """Start Mosquitto if available (and preferred), else amqtt in process."""
        binary = mosquitto_binary() if prefer == "mosquitto" else None
        if binary:
            self._start_mosquitto(binary)
        else:
            self._start_amqtt()
        logger.info("embedded %s broker listening on %s", self.kind, self.url)
        return self

    def _start_mosquitto(self, binary: str) -> None:
        """Start Mosquitto; a broker started before comes back on its own port (a restart)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        restart = self.port != 0
        for _ in range(1 if restart else 5):
            self.port = self.port if restart else free_port()
            # Started as root, mosquitto drops to its own user, which cannot reach a private temp
            # directory to save its database or read a password file there: stay the user we are.
            settings = f"user {getpass.getuser()}\n" if self.persistent or self.password_file else ""
            settings += "persistence false\n" if not self.persistent else (
                f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n")
            if self.password_file:
                Path(self.password_file).touch(exist_ok=True)
                settings += f"allow_anonymous false\npassword_file {self.password_file}\n"
                if self.acl_file:
                    settings += f"acl_file {self.acl_file}\n"
            else:
                settings += "allow_anonymous true\n"
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\n{settings}"
                "max_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            )
            self._log = open(self.workdir / "mosquitto.log", "ab")
            self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT)
            if wait_for_port(self.port, 10):
                self.kind = "mosquitto"
                return
            self.stop()
        raise RuntimeError(f"mosquitto ({binary}) did not start; see {self.workdir / 'mosquitto.log'}")

    @property
    def pid(self) -> int | None:
        """Process id of the Mosquitto started here (``kill -HUP`` makes it re-read its password file)."""
        return self._proc.pid if self._proc is not None else None

    def _start_amqtt(self) -> None:
        if self.password_file:
            raise RuntimeError("logins need Mosquitto; amqtt here runs anonymous")
        from amqtt.broker import Broker  # imported here: only needed without Mosquitto

        self.port = free_port()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._amqtt = broker = Broker(config, loop=loop)
            loop.run_until_complete(broker.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        # No TCP probe here: amqtt leaks the socket of a client that connects and sends nothing.
        if not ready.wait(10):
            raise RuntimeError("the amqtt broker did not start")
        self.kind = "amqtt"

    def stop(self) -> None:
        """Stop the broker and wait for it."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._loop is not None and self._amqtt is not None:
            fut = asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), self._loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                logger.warning("amqtt broker did not shut down cleanly", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread:
                self._thread.join(10)
            self._loop.close()
            self._loop = None
