"""Health probes and the heartbeat's faults: clock offset (chrony, SNTP), temperature, disk, network."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiver import health
from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules.heartbeat import Heartbeat

# `mmcli -L --output-keyvalue` and `mmcli -m <path> --output-keyvalue` of a SIMCom SIM7600G-H (QMI) on a Pi 4,
# connected to Viettel over LTE; `--signal-get` after `--signal-setup=60`. The layout is mmcli's own
# (cli/mmcli-output.c: keys padded to the longest, " : ", "--" for no value, lists as .length/.value[n]).
MMCLI_LIST = """\
modem-list.length   : 1
modem-list.value[1] : /org/freedesktop/ModemManager1/Modem/0
"""
MMCLI_LIST_EMPTY = "modem-list : 0\n"  # mmcli truncates the key to the field's own width when the list is empty
MMCLI_MODEM = """\
modem.dbus-path                                 : /org/freedesktop/ModemManager1/Modem/0
modem.generic.device-identifier                 : b1d5b3b2f1d47c3bd40f5e0a6dcb6a8f2b3d0e41
modem.generic.manufacturer                      : SIMCOM INCORPORATED
modem.generic.model                             : SIMCOM_SIM7600G-H
modem.generic.revision                          : LE20B04SIM7600G22
modem.generic.carrier-configuration             : --
modem.generic.carrier-configuration-revision    : --
modem.generic.hardware-revision                 : 10000
modem.generic.supported-capabilities.length     : 1
modem.generic.supported-capabilities.value[1]   : gsm-umts, lte
modem.generic.current-capabilities.length       : 1
modem.generic.current-capabilities.value[1]     : gsm-umts, lte
modem.generic.equipment-identifier              : 862636050000000
modem.generic.device                            : /sys/devices/platform/scb/fd500000.pcie/usb1/1-1/1-1.3
modem.generic.drivers.length                    : 2
modem.generic.drivers.value[1]                  : option
modem.generic.drivers.value[2]                  : qmi_wwan
modem.generic.plugin                            : simtech
modem.generic.primary-port                      : cdc-wdm0
modem.generic.ports.length                      : 5
modem.generic.ports.value[1]                    : cdc-wdm0 (qmi)
modem.generic.ports.value[2]                    : ttyUSB1 (gps)
modem.generic.ports.value[3]                    : ttyUSB2 (at)
modem.generic.ports.value[4]                    : ttyUSB3 (at)
modem.generic.ports.value[5]                    : wwan0 (net)
modem.generic.own-numbers                       : --
modem.generic.unlock-required                   : sim-pin2
modem.generic.unlock-retries.length             : 4
modem.generic.unlock-retries.value[1]           : sim-pin (3)
modem.generic.unlock-retries.value[2]           : sim-puk (10)
modem.generic.unlock-retries.value[3]           : sim-pin2 (3)
modem.generic.unlock-retries.value[4]           : sim-puk2 (10)
modem.generic.state                             : connected
modem.generic.state-failed-reason               : --
modem.generic.power-state                       : on
modem.generic.access-technologies.length        : 1
modem.generic.access-technologies.value[1]      : lte
modem.generic.signal-quality.value              : 67
modem.generic.signal-quality.recent             : yes
modem.generic.supported-modes.length            : 3
modem.generic.supported-modes.value[1]          : allowed: 2g, 3g, 4g; preferred: none
modem.generic.supported-modes.value[2]          : allowed: 3g, 4g; preferred: none
modem.generic.supported-modes.value[3]          : allowed: 4g; preferred: none
modem.generic.current-modes                     : allowed: 2g, 3g, 4g; preferred: none
modem.generic.supported-bands.length            : 3
modem.generic.supported-bands.value[1]          : egsm
modem.generic.supported-bands.value[2]          : eutran-3
modem.generic.supported-bands.value[3]          : eutran-8
modem.generic.current-bands.length              : 3
modem.generic.current-bands.value[1]            : egsm
modem.generic.current-bands.value[2]            : eutran-3
modem.generic.current-bands.value[3]            : eutran-8
modem.generic.supported-ip-families.length      : 3
modem.generic.supported-ip-families.value[1]    : ipv4
modem.generic.supported-ip-families.value[2]    : ipv6
modem.generic.supported-ip-families.value[3]    : ipv4v6
modem.3gpp.imei                                 : 862636050000000
modem.3gpp.enabled-locks.length                 : 1
modem.3gpp.enabled-locks.value[1]               : fixed-dialing
modem.3gpp.operator-code                        : 45204
modem.3gpp.operator-name                        : Viettel
modem.3gpp.registration-state                   : home
modem.3gpp.packet-service-state                 : attached
modem.3gpp.pco                                  : --
modem.3gpp.eps.ue-mode-operation                : csps-2
modem.3gpp.eps.initial-bearer.dbus-path         : --
modem.3gpp.eps.initial-bearer.settings.apn      : v-internet
modem.3gpp.eps.initial-bearer.settings.ip-type  : ipv4v6
modem.3gpp.eps.initial-bearer.settings.user     : --
modem.3gpp.eps.initial-bearer.settings.password : --
modem.generic.sim                               : /org/freedesktop/ModemManager1/SIM/0
modem.generic.sim-slots                         : --
modem.generic.primary-sim-slot                  : --
modem.generic.bearers.length                    : 1
modem.generic.bearers.value[1]                  : /org/freedesktop/ModemManager1/Bearer/0
"""
MMCLI_SIGNAL = """\
modem.signal.refresh.rate         : 60
modem.signal.threshold.rssi       : 0
modem.signal.threshold.error-rate : no
modem.signal.cdma1x.rssi          : --
modem.signal.cdma1x.ecio          : --
modem.signal.cdma1x.error-rate    : --
modem.signal.evdo.rssi            : --
modem.signal.evdo.ecio            : --
modem.signal.evdo.sinr            : --
modem.signal.evdo.io              : --
modem.signal.evdo.error-rate      : --
modem.signal.gsm.rssi             : --
modem.signal.gsm.error-rate       : --
modem.signal.umts.rssi            : --
modem.signal.umts.rscp            : --
modem.signal.umts.ecio            : --
modem.signal.umts.error-rate      : --
modem.signal.lte.rssi             : -71.00
modem.signal.lte.rsrq             : -11.00
modem.signal.lte.rsrp             : -98.00
modem.signal.lte.snr              : 9.40
modem.signal.lte.error-rate       : --
modem.signal.5g.rssi              : --
modem.signal.5g.rsrq              : --
modem.signal.5g.rsrp              : --
modem.signal.5g.snr               : --
modem.signal.5g.error-rate        : --
"""
MMCLI_SIGNAL_NOT_SET_UP = """\
modem.signal.refresh.rate         : 0
modem.signal.threshold.rssi       : 0
modem.signal.threshold.error-rate : no
modem.signal.lte.rssi             : --
modem.signal.lte.rsrq             : --
"""
PROC_NET_WIRELESS = """\
Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   47.  -63.  -256        0      0      0      0     41        0
"""
PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wwan0\t00000000\t01E6A8C0\t0003\t0\t0\t700\t00000000\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
"""

TRACKING = (
    "C0A80101,gw.lan,3,1700000000.123,0.250000000,0.000012,0.000020,-12.345,0.010,0.020,0.001,0.002,64.0,Normal\n"
)


def test_parse_chrony_tracking() -> None:
    assert health.parse_chrony_tracking(TRACKING) == pytest.approx(250.0)
    assert health.parse_chrony_tracking("garbage") is None


def test_sntp_query_against_a_local_server() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    skew_s = 0.5  # this server's clock is 500 ms ahead of ours

    def serve() -> None:
        _data, addr = server.recvfrom(512)
        now = time.time() + skew_s + health._NTP_EPOCH
        stamp = struct.pack("!II", int(now), int((now % 1) * 2**32))
        server.sendto(b"\x24" + 31 * b"\0" + stamp + stamp, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        offset = health.sntp_offset_ms("127.0.0.1", server.getsockname()[1])
    finally:
        thread.join(5)
        server.close()
    assert offset == pytest.approx(-500.0, abs=50)
    assert health.sntp_offset_ms("127.0.0.1", 9, timeout=0.2) is None


def test_thermal_zones(tmp_path: Path) -> None:
    for n, milli in enumerate((45000, 82500)):
        (tmp_path / f"thermal_zone{n}").mkdir()
        (tmp_path / f"thermal_zone{n}" / "temp").write_text(f"{milli}\n")
    assert health.cpu_temperature_c(tmp_path) == 82.5
    assert health.cpu_temperature_c(tmp_path / "none") is None


def test_heartbeat_raises_and_clears_the_clock_fault(
    make_config: Callable[..., ReceiverConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chronyc = tmp_path / "chronyc"  # chrony cannot run here: a stand-in prints what chronyc would
    offset_file = tmp_path / "offset"
    chronyc.write_text(f"#!/bin/sh\nprintf 'x,y,3,1.0,%s,0,0,0,0,0,0,0,0,Normal\\n' \"$(cat {offset_file})\"\n")
    chronyc.chmod(0o755)
    monkeypatch.setenv("LOAXA_CHRONYC", str(chronyc))
    agent = Agent(make_config())
    try:
        offset_file.write_text("0.180")
        body = agent.heartbeat()
        assert body["clock_offset_ms"] == 180.0 and body["version"] and body["disk"]["total_bytes"] > 0
        assert body["volume"] == 80 and body["cache_bytes"] == 0
        assert agent.heartbeat()["faults"] == ["clock_unsynchronised"]  # still off: raised once, not twice
        offset_file.write_text("0.002")
        assert agent.heartbeat()["faults"] == []
        found: list[dict[str, Any]] = [json.loads(p.payload) for p in agent.outbox.pending()]
    finally:
        agent.stop()
    clock = [(e["type"], e["fault"]) for e in found if e.get("fault") == "clock_unsynchronised"]
    assert clock == [("fault.raised", "clock_unsynchronised"), ("fault.cleared", "clock_unsynchronised")]


# ------------------------------------------------------------------ network


def test_parse_mmcli_modem_list_and_modem() -> None:
    assert health.parse_keyvalue(MMCLI_LIST)["modem-list.value[1]"] == "/org/freedesktop/ModemManager1/Modem/0"
    assert health._list(health.parse_keyvalue(MMCLI_LIST), "modem-list") == ["/org/freedesktop/ModemManager1/Modem/0"]
    assert health._list(health.parse_keyvalue(MMCLI_LIST_EMPTY), "modem-list") == []
    modem = health.parse_mmcli_modem(MMCLI_MODEM)
    assert modem == {"state": "connected", "signal_pct": 67, "tech": "lte", "net_ports": ["wwan0"]}
    values = health.parse_keyvalue(MMCLI_MODEM)
    assert values["modem.generic.current-modes"] == "allowed: 2g, 3g, 4g; preferred: none"  # colons kept
    assert values["modem.3gpp.pco"] == ""  # "--"


def test_parse_mmcli_modem_edge_cases() -> None:
    disabled = MMCLI_MODEM.replace(": connected", ": disabled").replace(": 67", ": 0")
    assert health.parse_mmcli_modem(disabled)["signal_pct"] is None  # no signal reading below "enabled"
    nsa = MMCLI_MODEM.replace("access-technologies.length        : 1", "access-technologies.length        : 2")
    nsa = nsa.replace("access-technologies.value[1]      : lte\n", "access-technologies.value[1]      : lte\n"
                      "modem.generic.access-technologies.value[2]      : 5gnr\n")
    assert health.parse_mmcli_modem(nsa)["tech"] == "5gnr"  # the best technology in use
    assert health.parse_mmcli_modem("") == {"state": None, "signal_pct": None, "tech": None, "net_ports": []}


def test_parse_mmcli_signal() -> None:
    assert health.parse_mmcli_signal(MMCLI_SIGNAL, "lte") == -71.0
    assert health.parse_mmcli_signal(MMCLI_SIGNAL, None) == -71.0
    assert health.parse_mmcli_signal(MMCLI_SIGNAL_NOT_SET_UP, "lte") is None


def test_parse_proc_net_wireless_and_route() -> None:
    assert health.parse_proc_net_wireless(PROC_NET_WIRELESS) == {"interface": "wlan0", "signal_pct": 67,
                                                                "rssi_dbm": -63.0}
    assert health.parse_proc_net_wireless(PROC_NET_WIRELESS, "wlan1") is None
    assert health.parse_proc_net_wireless(PROC_NET_WIRELESS.splitlines()[0]) is None
    assert health.default_route_interface(PROC_NET_ROUTE) == "eth0"  # the lower metric wins
    assert health.default_route_interface(PROC_NET_ROUTE.replace("\t100\t00000000", "\t900\t00000000")) == "wwan0"
    assert health.default_route_interface(PROC_NET_ROUTE.splitlines()[0]) is None


@pytest.mark.parametrize(("name", "kind"), [
    ("eth0", "ethernet"), ("enxb827eb123456", "ethernet"), ("end0", "ethernet"), ("wlan0", "wifi"),
    ("wlp2s0", "wifi"), ("wwan0", "cellular"), ("usb0", "cellular"), ("ppp0", "cellular"),
])
def test_interface_type(name: str, kind: str, tmp_path: Path) -> None:
    assert health.interface_type(name, tmp_path) == kind


def test_network_info_from_proc_files(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(PROC_NET_ROUTE.replace("eth0", "wlan0"))
    (tmp_path / "wireless").write_text(PROC_NET_WIRELESS)
    assert health.network_info(tmp_path, tmp_path) == {"type": "wifi", "signal_pct": 67, "rssi_dbm": -63.0,
                                                       "tech": None, "interface": "wlan0"}
    (tmp_path / "route").write_text(PROC_NET_ROUTE.splitlines()[0] + "\n")  # no default route (yet)
    assert health.network_info(tmp_path, tmp_path)["type"] == "wifi"  # the Wi-Fi link is still readable
    (tmp_path / "wireless").unlink()
    assert health.network_info(tmp_path, tmp_path) == {"type": None, "signal_pct": None, "rssi_dbm": None,
                                                       "tech": None, "interface": None}


def test_network_info_on_this_machine(make_config: Callable[..., ReceiverConfig]) -> None:
    """No modem here (maybe no mmcli at all): the real reading must still give the heartbeat its shape."""
    info = health.network_info()
    assert set(info) == {"type", "signal_pct", "rssi_dbm", "tech", "interface"}
    assert info["type"] in ("cellular", "wifi", "ethernet", None)
    agent = Agent(make_config())
    try:
        body = agent.heartbeat()
        assert body["network"]["type"] == info["type"]
        # What the agent sends is what the controller reads: the shared record, nothing ignored.
        beat = Heartbeat.decode(json.dumps(body).encode())
        assert beat.rx == agent.rx and beat.ignored == () and beat.body() == body
    finally:
        agent.stop()
