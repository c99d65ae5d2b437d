"""The process under systemd: sd_notify without a dependency, and running until SIGTERM.

:func:`notify` sends READY, WATCHDOG, STATUS and STOPPING to ``$NOTIFY_SOCKET``;
outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op returning False.
:func:`run_until_signal` starts a service and stops it cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send one notification (e.g. ``"READY=1"``); returns whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        logger.debug("sd_notify %s failed: %s", state, exc)
        return False


def watchdog_interval_s() -> float | None:
    """Half the ``WatchdogSec`` systemd asks for (``$WATCHDOG_USEC``), or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None


def run_until_signal(start: Callable[[], object], stop: Callable[[], object]) -> None:
    """Call ``start()``, wait for SIGTERM/SIGINT, then call ``stop()`` (handlers restored after)."""
    stop_requested = threading.Event()

    def _handler(signum: int, frame: object) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _handler)
    try:
        start()
        while not stop_requested.wait(1.0):
            pass
    finally:
        try:
            stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
