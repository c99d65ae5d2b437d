"""What the box can say about itself: clock offset, temperature, disk, network. Every probe may return None.

Clock offset comes from chrony (``chronyc -c tracking``; the binary can be
named by ``LOAXA_CHRONYC``) or, when an NTP server is given, from one SNTP
query. Temperature is read from ``/sys/class/thermal`` (the Pi's SoC zone).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

CLOCK_FAULT_MS = 100.0
OVERHEAT_C = 80.0
_NTP_EPOCH = 2208988800


def chrony_offset_ms() -> float | None:
    """Offset of the system clock from NTP time as chrony tracks it (ms, + = local clock ahead)."""
    binary = os.environ.get("LOAXA_CHRONYC") or shutil.which("chronyc")
    if not binary:
        return None
    try:
        out = subprocess.run([binary, "-c", "tracking"], check=True, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("chronyc tracking failed: %s", exc)
        return None
    return parse_chrony_tracking(out.stdout)


def parse_chrony_tracking(text: str) -> float | None:
    """The offset in ms from ``chronyc -c tracking`` CSV (field 5: seconds the system clock is fast)."""
    fields = text.strip().split(",")
    if len(fields) < 5:
        return None
    try:
        return float(fields[4]) * 1000.0
    except ValueError:
        return None


def sntp_offset_ms(server: str, port: int = 123, timeout: float = 2.0) -> float | None:
    """One SNTP query: local clock minus server clock in ms (+ = local ahead), or None."""
    packet = b"\x23" + 47 * b"\0"  # LI 0, version 4, client mode
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            t1 = time.time()
            sock.sendto(packet, (server, port))
            data, _ = sock.recvfrom(512)
            t4 = time.time()
    except OSError as exc:
        logger.debug("SNTP query to %s failed: %s", server, exc)
        return None
    if len(data) < 48:
        return None
    t2 = _ntp_time(data[32:40])
    t3 = _ntp_time(data[40:48])
    server_offset = ((t2 - t1) + (t3 - t4)) / 2  # server minus local
    return -server_offset * 1000.0


def _ntp_time(raw: bytes) -> float:
    seconds, fraction = struct.unpack("!II", raw)
    return seconds - _NTP_EPOCH + fraction / 2**32


def cpu_temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """The hottest thermal zone in °C, or None where none is readable."""
    temps = []
    for zone in root.glob("thermal_zone*/temp"):
        try:
            temps.append(int(zone.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(temps) if temps else None


def network_type() -> str | None:
    """``wwan`` (4G modem), ``wifi`` or ``ethernet`` for the interface of the default route."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[1] == "00000000":
            name = parts[0]
            if name.startswith(("wwan", "ppp", "usb")):
                return "wwan"
            if name.startswith("wl") or Path(f"/sys/class/net/{name}/wireless").exists():
                return "wifi"
            return "ethernet"
    return None


def disk(path: Path) -> dict[str, int] | None:
    """Total and free bytes of the file system holding ``path``."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"total_bytes": usage.total, "free_bytes": usage.free}
