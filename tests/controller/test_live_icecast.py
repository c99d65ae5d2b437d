"""Live audio through a real Icecast 2: a browser-like WebM/Opus recording fed to the live encoder in real
time reaches the receiver's stream reader with its clicks where they were; failures of the encoder or of
Icecast come back as ``LiveError`` codes instead of hangs; Icecast's process is started and stopped cleanly.

Needs Debian's icecast2, ffmpeg and ffprobe (skipped with the reason when one is missing). Delays are logged
(and recorded as test properties), never asserted: wall-clock bounds belong to ``bench/live_voice.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from live_support import SAMPLE_RATE, Listener, ffprobe_exe, make_webm, media_chunks, run_live, summary

from audio.live import LiveEncoder, LiveError, input_format_for, mask_credentials
from controller.broker import free_port
from controller.icecast import (
    MP3_LIVE_BURST,
    OGG_LIVE_BURST,
    EmbeddedIcecast,
    IcecastUnavailable,
    burst_for,
    config_xml,
    icecast_binary,
)
from receiver.relay import RelayStream

logger = logging.getLogger(__name__)

needs_icecast = pytest.mark.skipif(icecast_binary() is None,
                                   reason="icecast2 is not installed (apt install icecast2, or set LOAXA_ICECAST)")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or ffprobe_exe() is None,
                                  reason="ffmpeg and ffprobe are not installed (apt install ffmpeg)")

CLICKS_S = [2.0, 3.5, 5.0, 6.5]
DURATION_S = 8.0
WEBM = input_format_for("audio/webm;codecs=opus")
GIVE_UP_S = 20.0
"""How long a test waits for a failure to show before it fails itself (a guard against hanging, not a bound)."""


@pytest.fixture
def icecast(tmp_path: Path) -> Iterator[EmbeddedIcecast]:
    server = EmbeddedIcecast(tmp_path / "icecast").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The recording as MediaRecorder's 250 ms chunks (the first one carries the WebM header)."""
    return media_chunks(make_webm(tmp_path_factory.mktemp("voice"), DURATION_S, CLICKS_S))


def _feed_until_error(encoder: LiveEncoder, chunks: list[bytes]) -> LiveError:
    """Feed chunks (the voice, then its last chunk again) every 50 ms until ``feed`` refuses one."""
    deadline = time.monotonic() + GIVE_UP_S
    k = 0
    while time.monotonic() < deadline:
        try:
            encoder.feed(chunks[min(k, len(chunks) - 1)])
        except LiveError as exc:
            return exc
        k += 1
        time.sleep(0.05)
    pytest.fail(f"feed kept accepting chunks for {GIVE_UP_S} s after the encoder should have failed")


# ----------------------------------------------------------------- the voice path


@needs_icecast
@needs_ffmpeg
@pytest.mark.e2e
@pytest.mark.parametrize(("mount", "codec"), [("/live", "mp3"), ("/live.ogg", "opus")])
def test_voice_reaches_the_receivers_stream_reader(icecast: EmbeddedIcecast, voice: list[bytes], mount: str,
                                                    codec: str, record_property: Callable[[str, object], None]) -> None:
    encoder = LiveEncoder(icecast.source_url(mount), input_format=WEBM, codec=codec)
    listener = Listener(icecast.listen_url(mount)).start()  # retries until the encoder has made the mount
    try:
        run = run_live(voice, encoder.feed, listener, CLICKS_S, after=encoder.close)
    finally:
        listener.stop()
        encoder.kill()
    assert encoder.bytes_in == sum(len(c) for c in voice)
    assert listener.stream.connections >= 1, f"the listener never got audio: {listener.stream.last_error}"
    # The listener joined once the mount existed, so it holds at least the clicks fed after that; run_live
    # paired them from the end and checked that they are as far apart as sent.
    assert len(run.matched) >= 2, f"clicks found at samples {run.found}, sent at {CLICKS_S} s"
    # The pairing from the end is right when the stream ends as long after the last click as the recording.
    after_last = (listener.samples - run.found[-1]) / SAMPLE_RATE
    assert 0.5 < after_last < DURATION_S - CLICKS_S[-1] + 0.5, f"{after_last:.2f} s received after the last click"
    arrival, played = run.arrival_delays(), run.play_delays()
    logger.info("live %s (%s): feed -> listener buffer %s; feed -> relay engine's output %s", mount, codec,
                summary(arrival), summary(played))
    record_property("feed_to_buffer_ms", [round(d * 1000) for d in arrival])
    record_property("feed_to_played_ms", [round(d * 1000) for d in played])


# ----------------------------------------------------------------- failures come back as codes


@needs_icecast
@needs_ffmpeg
def test_a_wrong_source_password_is_a_live_error(icecast: EmbeddedIcecast, voice: list[bytes]) -> None:
    url = icecast.source_url("/live").replace(icecast.source_password, "not-the-password")
    encoder = LiveEncoder(url, input_format=WEBM)
    error = _feed_until_error(encoder, voice)
    assert error.code == "live.encoder_gone"
    assert "not-the-password" not in error.message
    assert "401" in error.message or "Unauthorized" in error.message, error.message
    with pytest.raises(LiveError) as closing:
        encoder.close()
    assert closing.value.code == "live.encoder_failed"
    encoder.close()  # the second close is quiet
    assert not encoder.running
    assert "/live" not in icecast.active_mounts()


@needs_icecast
@needs_ffmpeg
@pytest.mark.parametrize("when", ["before", "during"])
def test_a_stopped_icecast_is_a_live_error(icecast: EmbeddedIcecast, voice: list[bytes], when: str) -> None:
    if when == "before":
        icecast.stop()
    encoder = LiveEncoder(icecast.source_url("/live"), input_format=WEBM)
    try:
        if when == "during":
            for chunk in voice[:8]:
                encoder.feed(chunk)
                time.sleep(0.05)
            deadline = time.monotonic() + GIVE_UP_S
            while "/live" not in icecast.active_mounts() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "/live" in icecast.active_mounts(), encoder.stderr_tail()
            icecast.stop()
        error = _feed_until_error(encoder, voice[8:] if when == "during" else voice)
        assert error.code == "live.encoder_gone"
        assert icecast.source_password not in error.message
        with pytest.raises(LiveError) as closing:
            encoder.close()
        assert closing.value.code == "live.encoder_failed"
    finally:
        encoder.kill()


@needs_icecast
@needs_ffmpeg
def test_a_stalled_encoder_refuses_chunks_instead_of_queueing_them(icecast: EmbeddedIcecast) -> None:
    encoder = LiveEncoder(icecast.source_url("/live"), input_format=WEBM, max_backlog_bytes=100_000)
    os.kill(encoder.pid, signal.SIGSTOP)  # ffmpeg stops reading: the pipe fills, then the queue
    try:
        chunk = bytes(16_384)
        with pytest.raises(LiveError) as refused:
            for _ in range(200):  # 3.2 MB: far more than the pipe and the queue hold together
                encoder.feed(chunk)
        assert refused.value.code == "live.backlog"
        assert encoder.backlog <= 100_000
        assert encoder.bytes_in < 200 * len(chunk)
    finally:
        os.kill(encoder.pid, signal.SIGCONT)
        encoder.kill()
    assert not encoder.running


def test_bad_formats_codecs_and_inputs_are_refused() -> None:
    with pytest.raises(LiveError) as bad_format:
        LiveEncoder("icecast://source:x@127.0.0.1:9/live", input_format="hls")
    assert bad_format.value.code == "live.bad_format"
    with pytest.raises(LiveError) as bad_codec:
        LiveEncoder("icecast://source:x@127.0.0.1:9/live", codec="flac")
    assert bad_codec.value.code == "live.bad_codec"
    with pytest.raises(LiveError) as bad_input:
        LiveEncoder.from_input("file:///etc/passwd", "icecast://source:x@127.0.0.1:9/live")
    assert bad_input.value.code == "live.bad_input"


@needs_ffmpeg
def test_a_closed_encoder_refuses_chunks() -> None:
    encoder = LiveEncoder(f"icecast://source:x@127.0.0.1:{free_port()}/live", input_format=WEBM)
    encoder.kill()
    with pytest.raises(LiveError) as closed:
        encoder.feed(b"x")
    assert closed.value.code == "live.closed"


def test_helpers_mask_passwords_and_name_formats() -> None:
    assert mask_credentials("icecast://source:s3cret@127.0.0.1:8000/live: 401") == \
        "icecast://source:***@127.0.0.1:8000/live: 401"
    assert mask_credentials("password s3cret in a message", "s3cret") == "password *** in a message"
    assert input_format_for("audio/webm;codecs=opus") == "webm"
    assert input_format_for("audio/ogg; codecs=opus") == "ogg"
    assert input_format_for("audio/x-unknown") is None
    assert burst_for("/live") == MP3_LIVE_BURST and burst_for("/live.ogg") == OGG_LIVE_BURST


# ----------------------------------------------------------------- the station mixer: an input of its own


@needs_icecast
@needs_ffmpeg
@pytest.mark.e2e
def test_from_input_relays_a_stream_into_another_mount(icecast: EmbeddedIcecast) -> None:
    station = subprocess.Popen(
        [shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
         f"sine=frequency=1000:sample_rate={SAMPLE_RATE}:duration=60", "-ac", "1", "-c:a", "libmp3lame",
         "-b:a", "48k", "-content_type", "audio/mpeg", "-f", "mp3", icecast.source_url("/station")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay: LiveEncoder | None = None
    stream = RelayStream(icecast.listen_url("/relay"), SAMPLE_RATE, 1, retry_max_s=0.5, label="relay-test")
    try:
        deadline = time.monotonic() + GIVE_UP_S
        while "/station" not in icecast.active_mounts() and time.monotonic() < deadline:
            time.sleep(0.05)
        relay = LiveEncoder.from_input(icecast.listen_url("/station"), icecast.source_url("/relay"),
                                       input_format="mp3")
        with pytest.raises(LiveError) as not_fed:
            relay.feed(b"x")
        assert not_fed.value.code == "live.not_fed"
        stream.start()
        second = SAMPLE_RATE * 2
        while stream.available() < second and time.monotonic() < deadline and relay.running:
            time.sleep(0.05)
        pcm = stream.take(second)
        assert len(pcm) == second, f"relay: {relay.stderr_tail()}; listener: {stream.last_error}"
        loud = max(abs(v) for v in memoryview(pcm[second // 2:]).cast("h"))
        assert loud > 2000, f"the relayed tone (lavfi sine: 1/8 of full scale) peaks at {loud}"
    finally:
        stream.stop()
        if relay is not None:
            relay.close()  # SIGTERM: not an error of the encoder's own
            assert not relay.running
        station.kill()
        station.wait()


@needs_ffmpeg
def test_from_input_with_a_missing_alsa_device_fails_with_a_code() -> None:
    demuxers = subprocess.run(["ffmpeg", "-hide_banner", "-demuxers"], capture_output=True, text=True).stdout
    if " alsa " not in demuxers:
        pytest.skip("this ffmpeg has no ALSA input")
    encoder = LiveEncoder.from_input("alsa:hw:97", f"icecast://source:x@127.0.0.1:{free_port()}/mixer")
    try:
        deadline = time.monotonic() + GIVE_UP_S
        while encoder.returncode is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert encoder.returncode not in (None, 0)
        assert not encoder.running
    finally:
        encoder.kill()


# ----------------------------------------------------------------- the Icecast process


@needs_icecast
def test_stop_ends_icecast_and_frees_its_port(tmp_path: Path) -> None:
    server = EmbeddedIcecast(tmp_path / "icecast").start()
    pid, port = server.pid, server.port
    assert pid is not None and server.running
    assert server.base_url == f"http://127.0.0.1:{port}"
    assert server.listen_url("live") == f"http://127.0.0.1:{port}/live"
    assert server.source_url("/live") == f"icecast://source:{server.source_password}@127.0.0.1:{port}/live"
    assert server.active_mounts() == []
    server.stop()
    server.stop()
    assert not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as again:  # another server can listen there (SO_REUSEADDR, as servers do: the
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections linger in TIME_WAIT)
        again.bind(("127.0.0.1", port))
        again.listen()
    assert not (tmp_path / "icecast" / "icecast.pid").exists()


@needs_icecast
def test_icecast_that_cannot_listen_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedIcecast(tmp_path / "icecast", port=taken.getsockname()[1])
        with pytest.raises(IcecastUnavailable) as failed:
            server.start()
    assert "did not start listening" in str(failed.value)
    assert "Could not create listener socket" in str(failed.value)  # the tail of Icecast's own log
    assert not server.running


def test_no_icecast_binary_is_icecast_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOAXA_ICECAST", str(tmp_path / "no-such-icecast"))
    with pytest.raises(IcecastUnavailable) as failed:
        EmbeddedIcecast(tmp_path / "icecast").start()
    assert "cannot run" in str(failed.value)


def test_config_keeps_bursts_small_and_drops_root_only_when_asked(tmp_path: Path) -> None:
    plain = config_xml(port=8001, source_password="src", admin_password="adm", workdir=tmp_path)
    assert "<changeowner>" not in plain
    assert f"<burst-size>{MP3_LIVE_BURST}</burst-size>" in plain
    assert "<mount-name>/live.ogg</mount-name>" in plain and f"<burst-size>{OGG_LIVE_BURST}</burst-size>" in plain
    assert "<bind-address>127.0.0.1</bind-address>" in plain and "<port>8001</port>" in plain
    as_root = config_xml(port=8001, source_password="src", admin_password="adm", workdir=tmp_path,
                         change_owner=("nobody", "nogroup"))
    assert "<user>nobody</user><group>nogroup</group>" in as_root
