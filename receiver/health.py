"""What the box can say about itself: clock offset, temperature, disk, network. Every probe may return None.

Clock offset comes from chrony (``chronyc -c tracking``; the binary can be
named by ``LOAXA_CHRONYC``) or, when an NTP server is given, from one SNTP
query. Temperature is read from ``/sys/class/thermal`` (the Pi's SoC zone).
The network (:func:`network_info`) from the default route, ModemManager
(``mmcli``) for a 4G modem and ``/proc/net/wireless`` for Wi-Fi.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

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
    return float(seconds - _NTP_EPOCH + fraction / 2**32)


def cpu_temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """The hottest thermal zone in °C, or None where none is readable."""
    temps = []
    for zone in root.glob("thermal_zone*/temp"):
        try:
            temps.append(int(zone.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(temps) if temps else None


ACCESS_TECH_RANK = (
    "5gnr", "lte", "lte-cat-m", "lte-nb-iot", "hspa-plus", "hspa", "hsupa", "hsdpa", "umts",
    "evdob", "evdoa", "evdo0", "1xrtt", "edge", "gprs", "gsm-compact", "gsm",
)
"""ModemManager's access technologies, best first: the heartbeat names the best one in use."""
_SIGNAL_SECTIONS = {"5gnr": "5g", "lte": "lte", "lte-cat-m": "lte", "lte-nb-iot": "lte", "umts": "umts",
                    "hsdpa": "umts", "hsupa": "umts", "hspa": "umts", "hspa-plus": "umts", "gsm": "gsm",
                    "gsm-compact": "gsm", "gprs": "gsm", "edge": "gsm"}
_MODEM_UP = ("enabled", "searching", "registered", "disconnecting", "connecting", "connected")
"""Modem states in which ModemManager's signal quality means something (below ``enabled`` it reads 0)."""
WIFI_QUALITY_MAX = 70
"""cfg80211 reports Wi-Fi link quality on a 0-70 scale in /proc/net/wireless (signal + 110 dBm, clamped)."""
_NET_PORT = re.compile(r"^(\S+) \(net\)$")


def parse_keyvalue(text: str) -> dict[str, str]:
    """``mmcli --output-keyvalue`` output as a dict; ``--`` (no value) becomes an empty string.

    Lines look like ``modem.generic.signal-quality.value      : 67``: the key
    padded to the longest one, `` : ``, the value (which may hold colons).
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" : ")
        if not sep:
            continue
        value = value.strip()
        values[key.strip()] = "" if value == "--" else value
    return values


def _list(values: dict[str, str], key: str) -> list[str]:
    """The items of a keyvalue list (``key.length``, ``key.value[1]``...), in order."""
    found = []
    for n in range(1, 1 + _int_or(values.get(f"{key}.length"), 0)):
        item = values.get(f"{key}.value[{n}]")
        if item:
            found.append(item)
    return found


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def parse_mmcli_modem(text: str) -> dict[str, Any]:
    """The fields the heartbeat wants from ``mmcli -m <modem> --output-keyvalue``.

    ``signal_pct`` (ModemManager's signal quality, None while the modem is not
    enabled), ``tech`` (the best access technology in use, e.g. ``lte``),
    ``state`` and ``net_ports`` (the modem's network interfaces, e.g. ``wwan0``).
    """
    values = parse_keyvalue(text)
    state = values.get("modem.generic.state") or None
    techs = _list(values, "modem.generic.access-technologies")
    tech = min(techs, key=lambda t: ACCESS_TECH_RANK.index(t) if t in ACCESS_TECH_RANK else len(ACCESS_TECH_RANK),
               default=None)
    quality = values.get("modem.generic.signal-quality.value")
    signal_pct = None
    if state in _MODEM_UP and quality and quality.isdigit():
        signal_pct = max(0, min(100, int(quality)))
    ports = [m.group(1) for p in _list(values, "modem.generic.ports") if (m := _NET_PORT.match(p))]
    return {"state": state, "signal_pct": signal_pct, "tech": tech, "net_ports": ports}


def parse_mmcli_signal(text: str, tech: str | None = None) -> float | None:
    """RSSI in dBm from ``mmcli -m <modem> --signal-get --output-keyvalue`` (None until signal polling is set up).

    The section of ``tech`` is read first (``lte`` for LTE, ``5g`` for 5G NR...), then any other.
    """
    values = parse_keyvalue(text)
    sections = ["5g", "lte", "umts", "gsm", "evdo", "cdma1x"]
    preferred = _SIGNAL_SECTIONS.get(tech or "")
    if preferred:
        sections.remove(preferred)
        sections.insert(0, preferred)
    for section in sections:
        raw = values.get(f"modem.signal.{section}.rssi")
        if raw:
            try:
                return round(float(raw), 1)
            except ValueError:
                continue
    return None


def parse_proc_net_wireless(text: str, interface: str | None = None) -> dict[str, Any] | None:
    """Link quality (%) and signal level (dBm) of ``interface`` (or the first one) from /proc/net/wireless."""
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or (interface is not None and name != interface):
            continue
        fields = rest.split()
        if len(fields) < 3:
            continue
        try:
            link = float(fields[1].rstrip("."))
            level = float(fields[2].rstrip("."))
        except ValueError:
            continue
        return {
            "interface": name,
            "signal_pct": max(0, min(100, round(link * 100 / WIFI_QUALITY_MAX))),
            # A negative level is dBm (the kernel converts); a positive one is a driver's own scale.
            "rssi_dbm": level if level < 0 else None,
        }
    return None


def default_route_interface(text: str) -> str | None:
    """The interface of the default route with the lowest metric, from /proc/net/route."""
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8 or parts[1] != "00000000" or parts[7] != "00000000":
            continue
        try:
            flags, metric = int(parts[3], 16), int(parts[6])
        except ValueError:
            continue
        if flags & 0x1 and (best is None or metric < best[0]):  # RTF_UP
            best = (metric, parts[0])
    return best[1] if best else None


def interface_type(name: str, sys_net: Path = Path("/sys/class/net")) -> str:
    """``cellular``, ``wifi`` or ``ethernet`` from an interface's name (and /sys for Wi-Fi)."""
    if name.startswith(("wwan", "usb", "ppp", "wwp", "rmnet")):
        return "cellular"
    if name.startswith(("wlan", "wl")) or (sys_net / name / "wireless").exists():
        return "wifi"
    return "ethernet"


def _mmcli(*args: str) -> str | None:
    binary = os.environ.get("LOAXA_MMCLI") or shutil.which("mmcli")
    if not binary:
        return None
    try:
        out = subprocess.run([binary, *args, "--output-keyvalue"], check=True, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("mmcli %s failed: %s", " ".join(args), exc)
        return None
    return out.stdout


def modem_status() -> dict[str, Any] | None:
    """The first modem ModemManager knows (``mmcli``; the binary can be named by ``LOAXA_MMCLI``), or None."""
    listing = _mmcli("-L")
    if listing is None:
        return None
    modems = _list(parse_keyvalue(listing), "modem-list")
    if not modems:
        return None
    details = _mmcli("-m", modems[0])
    if details is None:
        return None
    status = parse_mmcli_modem(details)
    signal = _mmcli("-m", modems[0], "--signal-get")
    status["rssi_dbm"] = parse_mmcli_signal(signal, status["tech"]) if signal else None
    return status


NETWORK_CACHE_S = 10.0
"""The box's own reading is reused this long: the simulator runs many agents in one process, one mmcli is enough."""
_network_cache: tuple[float, dict[str, Any]] | None = None
_network_lock = threading.Lock()


def network() -> dict[str, Any]:
    """:func:`network_info` of this box, read at most every ``NETWORK_CACHE_S`` (a copy each call)."""
    global _network_cache
    with _network_lock:
        now = time.monotonic()
        if _network_cache is None or now - _network_cache[0] > NETWORK_CACHE_S:
            _network_cache = (now, network_info())
        return dict(_network_cache[1])


def network_info(proc_net: Path = Path("/proc/net"), sys_net: Path = Path("/sys/class/net")) -> dict[str, Any]:
    """The heartbeat's ``network``: ``type`` (cellular, wifi, ethernet or None), ``signal_pct``, ``rssi_dbm``,
    ``tech`` (e.g. ``lte``) and ``interface``; what cannot be read is None.

    The default route says which interface carries the traffic. When it is (or
    may be) a 4G modem, ModemManager gives signal quality and technology (RSSI
    only once its signal polling is set up: ``mmcli -m any --signal-setup=60``);
    for Wi-Fi, /proc/net/wireless gives link quality and level.
    """
    try:
        iface = default_route_interface((proc_net / "route").read_text())
    except OSError:
        iface = None
    kind = interface_type(iface, sys_net) if iface else None
    info: dict[str, Any] = {"type": kind, "signal_pct": None, "rssi_dbm": None, "tech": None, "interface": iface}
    if kind != "wifi":  # a modem in ECM/RNDIS mode looks like ethernet: its net port tells
        modem = modem_status()
        if modem is not None and (kind in (None, "cellular") or iface in modem["net_ports"]):
            info.update(type="cellular", signal_pct=modem["signal_pct"], rssi_dbm=modem["rssi_dbm"],
                        tech=modem["tech"])
            return info
    if kind in (None, "wifi"):
        try:
            wifi = parse_proc_net_wireless((proc_net / "wireless").read_text(), iface)
        except OSError:
            wifi = None
        if wifi is not None:
            info.update(type="wifi", signal_pct=wifi["signal_pct"], rssi_dbm=wifi["rssi_dbm"],
                        interface=wifi["interface"])
    return info


def disk(path: Path) -> dict[str, int] | None:
    """Total and free bytes of the file system holding ``path``."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"total_bytes": usage.total, "free_bytes": usage.free}
