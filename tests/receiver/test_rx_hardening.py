"""Broker and receiver hardening: client-id takeover, size limits, CONNACK timeouts, hostile JSON, file modes.

The broker tests run a real Mosquitto started from ``deploy/mosquitto/loaxa.conf`` itself (TLS
listener swapped for loopback, paths moved into a temporary directory), with the deploy ACL.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import receiver.mqtt as rx_mqtt
import receiver.mqtt.base as rx_base
from controller.broker import wait_for_port
from controller.mqtt import ControllerLink
from controller.services import brokerauth
from receiver.agent import Agent
from receiver.cache import write_atomic
from receiver.config import ReceiverConfig
from receiver.files import open_private, private_dir
from receiver.mqtt.pool import ClientPool
from schedules import signing, topics

from rx_support import free_port, mosquitto_binary, outbox_events, signed_conf, signed_manifest, unique, wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "mosquitto"
CTL_PW = "controller-pw-" + "x" * 12
RX_PW = "receiver-pw-" + "y" * 12
# The deploy lines that name this machine's files or TLS listener; the rest is used as it is.
_MACHINE_KEYS = ("listener", "certfile", "keyfile", "cafile", "password_file", "acl_file", "persistence_location")


class DeployBroker:
    """Mosquitto running the deploy config on a loopback port, with logins for the controller and ``rx-1``."""

    def __init__(self, workdir: Path, drop: tuple[str, ...] = ()) -> None:
        binary = mosquitto_binary()
        if binary is None:
            pytest.skip("mosquitto is not installed")
        self.workdir = workdir
        self.port = free_port()
        passwd = brokerauth.PasswordFile(workdir / "passwd")
        passwd.set("loaxa-controller", CTL_PW)
        passwd.set("rx-1", RX_PW)
        shutil.copyfile(DEPLOY / "loaxa.acl", workdir / "loaxa.acl")
        kept = [line for line in (DEPLOY / "loaxa.conf").read_text().splitlines()
                if line.split(" ", 1)[0] not in _MACHINE_KEYS + drop]
        assert any(line.startswith("use_username_as_clientid true") for line in kept) or drop
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", *kept, f"user {getpass.getuser()}",
            f"password_file {workdir / 'passwd'}", f"acl_file {workdir / 'loaxa.acl'}",
            f"persistence_location {workdir}/", "log_dest stderr", "log_type all", ""]))
        self._log = open(workdir / "mosquitto.log", "wb")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT)
        if not wait_for_port(self.port, 10):
            self.stop()
            pytest.fail((workdir / "mosquitto.log").read_text())

    def url(self, user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def deploy_broker(tmp_path: Path) -> Iterator[Callable[..., DeployBroker]]:
    made: list[DeployBroker] = []

    def make(drop: tuple[str, ...] = ()) -> DeployBroker:
        workdir = tmp_path / f"broker{len(made)}"
        workdir.mkdir()
        made.append(DeployBroker(workdir, drop))
        return made[-1]

    yield make
    for b in made:
        b.stop()


class Client:
    """A plain paho client that records CONNACK and messages."""

    def __init__(self, port: int, username: str, password: str, client_id: str, *, clean: bool = True,
                 subscribe: str | None = None) -> None:
        self.rc: list[Any] = []
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.c.username_pw_set(username, password)
        self.c.on_connect = self._connect
        self.c.on_subscribe = lambda *_: self.subscribed.set()
        self.c.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self._subscribe = subscribe
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        wait_until(lambda: self.rc, 10)

    def _connect(self, client: paho.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        self.rc.append(rc)
        if self._subscribe and not rc.is_failure:
            client.subscribe(self._subscribe, 1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _link(broker: DeployBroker, got: list[tuple[str, bytes]], **kwargs: Any) -> ControllerLink:
    link = ControllerLink(broker.url("loaxa-controller", CTL_PW), "loaxa-controller",
                          [(f"{topics.PREFIX}/rx/+/events", 1)], lambda t, p: got.append((t, p)), **kwargs)
    link.start()
    assert link.connected.wait(10)
    return link


def _round_trip(rx: Client, got: list[tuple[str, bytes]], payload: bytes) -> None:
    """rx-1 reports; the controller hears it (so its subscription is in place and it is connected)."""
    rx.publish(topics.rx_events("rx-1"), payload)
    wait_until(lambda: (topics.rx_events("rx-1"), payload) in got, 10)


# ------------------------------------------------------------------ 1. client-id takeover


def test_a_receiver_login_cannot_push_the_controller_off(deploy_broker: Callable[..., DeployBroker]) -> None:
    broker = deploy_broker()
    got: list[tuple[str, bytes]] = []
    link = _link(broker, got)
    try:
        intruder = Client(broker.port, "rx-1", RX_PW, client_id="loaxa-controller")
        try:
            assert not intruder.rc[0].is_failure  # its login is good: the broker names it rx-1, not the controller
            _round_trip(intruder, got, b"after the intruder connected")
            # Mosquitto kicks the older holder of an id before the newcomer's CONNACK: none happened.
            assert link.disconnects == 0 and link.connected.is_set()
        finally:
            intruder.close()
    finally:
        link.stop()


def test_the_controller_session_keeps_what_was_queued_for_it(deploy_broker: Callable[..., DeployBroker]) -> None:
    broker = deploy_broker()
    got: list[tuple[str, bytes]] = []
    link = _link(broker, got)
    rx = Client(broker.port, "rx-1", RX_PW, client_id="rx-1")
    try:
        _round_trip(rx, got, b"before")
        link.stop()  # a clean DISCONNECT: the persistent session stays, and queues for it
        # A clean session under the controller's id would wipe the controller's session ...
        intruder = Client(broker.port, "rx-1", RX_PW, client_id="loaxa-controller", clean=True)
        intruder.publish(topics.rx_events("rx-1"), b"queued while the controller was away")
        intruder.close()
        again: list[tuple[str, bytes]] = []
        link = _link(broker, again)
        # ... but the broker named it rx-1: the controller's session kept the message.
        wait_until(lambda: (topics.rx_events("rx-1"), b"queued while the controller was away") in again, 15)
    finally:
        rx.close()
        link.stop()


def test_without_use_username_as_clientid_the_takeover_works(deploy_broker: Callable[..., DeployBroker]) -> None:
    """What the setting prevents (this is why the tests above would fail without it)."""
    broker = deploy_broker(drop=("use_username_as_clientid",))
    got: list[tuple[str, bytes]] = []
    link = _link(broker, got)
    try:
        intruder = Client(broker.port, "rx-1", RX_PW, client_id="loaxa-controller")
        try:
            wait_until(lambda: link.disconnects >= 1, 10)
        finally:
            intruder.close()
    finally:
        link.stop()


def test_clients_use_their_login_as_client_id() -> None:
    link = ControllerLink("mqtt://loaxa-controller:pw@127.0.0.1:1", "ctl-web-1", [], lambda t, p: None)
    assert link.client_id == "loaxa-controller"
    assert ControllerLink("mqtt://127.0.0.1:1", "ctl-web-1", [], lambda t, p: None).client_id == "ctl-web-1"
    assert rx_mqtt.MqttSession("phu-1", "127.0.0.1", 1, username="phu-1", password="p").client_id == "phu-1"
    assert rx_mqtt.MqttSession("phu-1", "127.0.0.1", 1).client_id == "loaxa-rx-phu-1"


def test_acl_patterns_name_the_login() -> None:
    lines = [line.split() for line in (DEPLOY / "loaxa.acl").read_text().splitlines()
             if line.startswith("pattern")]
    assert lines and all("%c" not in words[-1] for words in lines)
    assert {words[-1] for words in lines if words[1] == "write"} == {
        "loaxa/v1/rx/%u/status", "loaxa/v1/rx/%u/hb", "loaxa/v1/rx/%u/events"}


# ------------------------------------------------------------------ 2. size limits


def test_oversized_telemetry_is_refused_before_it_is_queued(
    deploy_broker: Callable[..., DeployBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = deploy_broker()
    got: list[tuple[str, bytes]] = []
    link = _link(broker, got)
    rx = Client(broker.port, "rx-1", RX_PW, client_id="rx-1")
    try:
        with caplog.at_level(logging.WARNING, logger="controller.mqtt"):
            rx.publish(topics.rx_events("rx-1"), b"{" + b" " * (64 * 1024) + b"}")
            _round_trip(rx, got, b"small")  # after the big one: the big one was seen and dropped
        assert [p for _t, p in got] == [b"small"]
        assert link.refused == {"rx-1": 1}
        assert any("rx=rx-1" in r.getMessage() and "refused before queueing" in r.getMessage()
                   for r in caplog.records)
    finally:
        rx.close()
        link.stop()


def test_a_manifest_as_large_as_the_protocol_allows_passes_the_broker(
    deploy_broker: Callable[..., DeployBroker], signing_key: Any
) -> None:
    broker = deploy_broker()
    ctl = Client(broker.port, "loaxa-controller", CTL_PW, client_id="loaxa-controller")
    rx = Client(broker.port, "rx-1", RX_PW, client_id="rx-1", subscribe=f"{topics.PREFIX}/sched/#")
    try:
        assert rx.subscribed.wait(10)
        big = signed_manifest(signing_key, "area/big", 1, [])[:-1] + b" " * (signing.MAX_MESSAGE_BYTES - 4096) + b"}"
        assert len(big) <= signing.MAX_MESSAGE_BYTES
        ctl.publish(topics.sched("area/big"), big)
        wait_until(lambda: rx.messages, 20)
        assert rx.messages[0][1] == big
    finally:
        ctl.close()
        rx.close()


# ------------------------------------------------------------------ 3. connect and CONNACK timeouts


@pytest.fixture
def silent_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port that accepts TCP connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(5)
    server.close()
    for conn in accepted:
        conn.close()


def test_a_port_that_never_sends_connack_is_retried_and_named(
    silent_port: tuple[int, list[socket.socket]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port, accepted = silent_port
    monkeypatch.setattr(rx_base, "RECONNECT_MAX_S", 1.0)  # backoff draws 1 s each time
    session = rx_mqtt.MqttSession(unique("rx-"), "127.0.0.1", port, connect_timeout=2, connack_timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="receiver.mqtt"):
        session.start()
        try:
            wait_until(lambda: len(accepted) >= 3, 30)
        finally:
            session.stop()
    assert not session.connected
    expected = f"broker at 127.0.0.1:{port} accepted TCP but sent no CONNACK within 0.3 s"
    assert session.last_failure == expected
    assert sum(expected in r.getMessage() for r in caplog.records) >= 2


def test_pooled_clients_give_up_on_a_silent_port_too(
    silent_port: tuple[int, list[socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, accepted = silent_port
    monkeypatch.setattr(rx_base, "RECONNECT_MAX_S", 1.0)
    monkeypatch.setattr(rx_base, "CONNACK_TIMEOUT_S", 0.3)
    pool = ClientPool("127.0.0.1", port)
    pc = pool.add("loaxa-rx-pool-1", will_topic=None, username=None, password=None, on_connected=lambda pc: None,
                  on_message=lambda pc, t, p: None, on_published=lambda pc, m: None)
    pool.start()
    try:
        pool.call_soon(pc.connect)
        wait_until(lambda: len(accepted) >= 3, 30)
    finally:
        pool.stop()
    assert not pc.connected


# ------------------------------------------------------------------ 4. hostile JSON


@pytest.fixture
def agent(make_config: Callable[..., ReceiverConfig]) -> Iterator[Agent]:
    a = Agent(make_config())
    yield a
    a.stop()


DEEP = b"[" * 100_000
SURROGATE = (b'{"v":1,"sig":"AAAA","body":{"kind":"%s","scope":"%s","title":"\\ud800"}}')


def test_deep_or_unencodable_manifests_are_refused(agent: Agent) -> None:
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.sched(scope), DEEP)
    agent.handle_message(topics.sched(scope), SURROGATE % (b"manifest", scope.encode()))
    refused = outbox_events(agent, "manifest.refused")
    assert [(e["scope"], e["code"]) for e in refused] == [(scope, "msg.malformed")] * 2
    assert "nested too deeply" in refused[0]["reason"] and "not valid Unicode" in refused[1]["reason"]
    assert agent.manifests == {}


def test_deep_or_unencodable_commands_and_confs_are_refused(agent: Agent, signing_key: Any) -> None:
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.cmd(scope), DEEP)
    agent.handle_message(topics.cmd(scope), SURROGATE % (b"command", scope.encode()))
    refused = outbox_events(agent, "command.refused")
    assert [(e["scope"], e["code"], e["nonce"]) for e in refused] == [(scope, "msg.malformed", None)] * 2
    agent.handle_message(topics.conf(agent.rx), DEEP)
    assert [e["code"] for e in outbox_events(agent, "fault.raised")] == ["msg.malformed"]
    # Still working: a good conf is accepted after all that.
    agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, []))
    assert agent.conf is not None


def test_a_stored_deep_manifest_does_not_stop_the_agent(make_config: Callable[..., ReceiverConfig],
                                                        signing_key: Any) -> None:
    config = make_config()
    first = Agent(config)
    first.handle_message(topics.conf(first.rx), signed_conf(signing_key, first.rx, 1, []))
    first.stop()
    (Path(config.state_dir) / "manifests" / f"rx%2F{config.rx_id}.json").write_bytes(DEEP)
    again = Agent(config)  # the stored copy is ignored, with a warning, not a traceback
    try:
        assert again.manifests == {} and again.conf is not None
    finally:
        again.stop()


# ------------------------------------------------------------------ 5. file modes


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_receiver_state_is_private(make_config: Callable[..., ReceiverConfig], signing_key: Any) -> None:
    old = os.umask(0o022)
    try:
        config = make_config()
        agent = Agent(config)
        try:
            scope = f"rx/{agent.rx}"
            agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, []))
            agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 1, []))
            state = Path(config.state_dir)
            paths = [state, state / "manifests", state / "media", state / "media" / "tmp", state / "conf.json",
                     state / "outbox.db", state / "nonces.db", state / "manifests" / f"rx%2F{agent.rx}.json"]
            paths += [p for p in state.glob("*.db-*")]  # SQLite's -wal and -shm
            assert all(p.exists() for p in paths)
            assert [p for p in paths if not _private(p)] == []
        finally:
            agent.stop()
    finally:
        os.umask(old)


def test_file_helpers_tighten_what_exists(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    private_dir(loose)
    target = loose / "conf.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_atomic(target, b"new")
    with open_private(loose / "part", "ab") as fh:
        fh.write(b"x")
    assert _private(loose) and _private(target) and _private(loose / "part") and target.read_bytes() == b"new"


# ------------------------------------------------------------------ 6. systemd units


UNITS = REPO / "deploy" / "systemd"
COMMON = ("CapabilityBoundingSet=", "SystemCallFilter=@system-service", "SystemCallArchitectures=native",
          "RestrictNamespaces=true", "UMask=0027", "ProtectClock=true", "ProtectKernelLogs=true",
          "ProtectHostname=true", "ProtectKernelTunables=true", "ProtectKernelModules=true",
          "ProtectControlGroups=true", "NoNewPrivileges=true", "PrivateTmp=true", "ProtectSystem=strict")


def _keys(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("name", ["loaxa-controller.service", "loaxa-receiver.service"])
def test_units_are_hardened(name: str, tmp_path: Path) -> None:
    unit = UNITS / name
    keys = _keys(unit)
    for needed in COMMON:
        key, value = needed.split("=", 1)
        assert value in keys.get(key, []), needed
    if name == "loaxa-receiver.service":
        assert "PrivateDevices" not in keys and keys["DevicePolicy"] == ["closed"]
        assert set(keys["DeviceAllow"]) == {"char-alsa rw", "char-gpiochip rw", "char-*gpiomem* rw"}
        assert "audio" in keys["SupplementaryGroups"][0].split()
        assert keys["ReadWritePaths"] == ["/var/lib/loaxa-receiver"]
    else:
        assert keys["ReadWritePaths"] == ["/var/lib/loaxa -/etc/mosquitto/loaxa"]
        assert "/etc/mosquitto/loaxa/" in (DEPLOY / "loaxa.conf").read_text()
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return
    copy = tmp_path / name
    copy.write_text(unit.read_text().replace(f"/opt/loaxa/venv/bin/{name.split('.')[0]}", shutil.which("true")
                                             or "/bin/true"))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
