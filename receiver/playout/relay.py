"""The relay engine: a live stream for the slot, the item's fallback while the stream stays down.

See :func:`play_relay`; the stream itself (connect, reconnect, jitter buffer)
is :class:`receiver.relay.RelayStream`.
"""

from __future__ import annotations

import logging
from typing import Any

from receiver.decoder import Decoder, DecoderError
from receiver.playout.stage import BYTES_PER_MS, CHANNELS, CHUNK_MS, SAMPLE_RATE, Stage, frames, now_ms_f
from receiver.relay import RETRY_MIN_S, RelayStream
from receiver.sinks import Output
from schedules import events
from schedules.events import now_ms
from schedules.manifest import Item

logger = logging.getLogger(__name__)

RELAY_BUFFER_MS = 500
"""Stream audio buffered before it plays (at the start and after every underrun): absorbs network jitter."""
RELAY_RETURN_S = 3.0
"""While the fallback plays, the stream must have delivered audio this long without a break before it takes over."""
RELAY_STALL_S = 5.0
"""A stream silent this long while the player has nothing left is restarted (at most half the fallback grace)."""
RELAY_RETRY_MAX_S = 4.0
"""Longest wait between reconnection attempts (at most half the fallback grace, so a stream that is back is found)."""


def play_relay(stage: Stage, scope: str, item: Item, volume: int | None = None,
               tags: dict[str, Any] | None = None) -> None:
    """Play a relay item: its live stream for the slot, the fallback while the stream stays down.

    The stream (:class:`~receiver.relay.RelayStream`) connects during the
    pre-roll and reconnects by itself. The output runs for the whole slot
    and plays silence while no stream audio is buffered. Once the stream has
    been down for ``relay_fallback_after_s`` the ``stream_unavailable`` fault
    is raised and, when the item's fallback is in the cache, the fallback
    plays (a ``relay.fallback`` event says why). The stream keeps being
    retried meanwhile: once it has delivered audio for ``RELAY_RETURN_S``
    without a break it takes over again (the live relay is what the slot is
    for; the fallback only stands in) and the fault is cleared when its audio
    plays. A later outage in the same slot resumes the fallback where it
    stopped; a fallback played to its end is not repeated, and the slot then
    stays quiet until the stream returns.

    Events follow ordinary items: ``playback.started`` at the first audible
    sample (``source`` = ``stream`` or ``fallback``) and ``playback.finished``
    whose ``played_ms`` counts stream and fallback audio (``stream_ms``,
    ``fallback_ms`` and ``silence_ms`` give the split).
    """
    key = (item.id, item.start_ms)
    stage.played[key] = item.end_ms
    stage.discard_prepared()
    target, offset_ms = stage.start_point(item)
    if target >= item.end_ms:
        return
    assert item.url is not None
    base = {"item_id": item.id, "scope": scope, "planned_start_ms": item.start_ms, **(tags or {})}
    grace_ms = stage.config.relay_fallback_after_s * 1000.0
    half_grace_s = grace_ms / 2000.0
    stream = RelayStream(
        item.url,
        SAMPLE_RATE,
        CHANNELS,
        stall_s=min(RELAY_STALL_S, max(1.0, half_grace_s)),
        retry_max_s=min(RELAY_RETRY_MAX_S, max(RETRY_MIN_S, half_grace_s)),
        label=f"{stage.rx}/{item.id}",
    )
    stream.start()
    per_ms = BYTES_PER_MS
    chunk_bytes = frames(CHUNK_MS)
    jitter_bytes = frames(RELAY_BUFFER_MS)
    output: Output | None = None
    fallback: Decoder | None = None
    fallback_pos_ms = 0  # where the fallback content stands (resumed there after the stream returns)
    fallback_done = False
    buffering = True
    down_since: float | None = None  # wall-clock ms since when no stream audio played
    outage_reported = False
    stream_bytes = fallback_bytes = fed = 0
    started = False
    end_reason = "complete"
    error = ""
    # Measured before the wait, as for an item: the slot runs from ``target`` to its end, so a wake-up
    # a millisecond late does not shorten it.
    max_bytes = frames(item.end_ms - max(target, now_ms()))
    try:
        output = stage.go_live(item, stage.volume() if volume is None else volume, target, tags)
        if output is None:
            return
        down_since = now_ms_f()
        while fed < max_bytes:
            must_end = stage.must_end(item)
            if must_end is not None:
                end_reason = must_end
                if must_end == "preempted":
                    stage.played.pop(key, None)  # rejoined live after the emergency or test tone
                break
            n = min(chunk_bytes, max_bytes - fed)
            pcm = b""
            source = ""
            if fallback is not None and stream.up_for() >= RELAY_RETURN_S and stream.available() > 0:
                logger.info("rx %s: relay %s: the stream is back; leaving the fallback at %d ms", stage.rx,
                            item.id, fallback_pos_ms)
                fallback.kill()
                fallback.close()
                fallback = None
            if fallback is not None:
                stream.keep_latest(jitter_bytes)  # the live edge, ready for when the stream takes over
                pcm = b"" if fallback.eof else fallback.read(n)
                fallback_pos_ms += int(len(pcm) / per_ms)
                if len(pcm) < n:
                    logger.info("rx %s: relay %s: fallback played to its end; waiting for the stream",
                                stage.rx, item.id)
                    fallback.close()
                    fallback = None
                    fallback_done = True
                if pcm:
                    source = "fallback"
                    fallback_bytes += len(pcm)
            else:
                if buffering and stream.available() >= min(jitter_bytes, max_bytes - fed):
                    buffering = False
                if not buffering:
                    pcm = stream.take(n)
                    buffering = len(pcm) < n  # ran dry: silence until the jitter buffer is full again
                if pcm:
                    source = "stream"
                    stream_bytes += len(pcm)
                    down_since = None
                    outage_reported = False
                    stage.reporter.set_fault("stream_unavailable", False, item_id=item.id, url=item.url)
                elif down_since is None:
                    down_since = now_ms_f()
                if down_since is not None and not outage_reported and now_ms_f() - down_since > grace_ms:
                    outage_reported = True
                    fallback = _fall_back(stage,
                        base, item, now_ms_f() - down_since, stream.last_error, fallback_pos_ms, fallback_done
                    )
            fed += n
            before_ms = output.played_ms
            output.write(stage.correct_drift(output, pcm + bytes(n - len(pcm))))
            if pcm and not started:
                started = True
                first = output.first_sample_ms
                actual = first + before_ms if first is not None else now_ms_f()
                fields: dict[str, Any] = {"actual_start_ms": int(round(actual)), "offset_ms": offset_ms,
                                          "priority": item.priority, "kind": "relay", "url": item.url,
                                          "source": source}
                if source == "fallback" and item.media is not None:
                    fields["sha256"] = item.media.sha256
                stage.reporter.emit(events.PLAYBACK_STARTED, **base, **fields)
            if item.end_ms - now_ms() <= stage.config.preroll_ms:
                stage.prepare_following()
    except Exception as exc:
        logger.exception("rx %s: relaying %s failed", stage.rx, item.id)
        end_reason = "error"
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stage.end_live()
        stream.stop()
        if fallback is not None:
            fallback.kill()
            fallback.close()
        stage.close_output(output, item)
    if not started:
        if end_reason in ("complete", "error"):
            reason = error or (f"no audio from {item.url} in the whole slot and no fallback played: "
                               f"{stream.last_error or 'no connection'}")
            code = "relay.unavailable" if end_reason == "complete" else "play.error"
            stage.reporter.emit(events.PLAYBACK_FAILED, **base, code=code, url=item.url, reason=reason)
        return
    finished: dict[str, Any] = {
        **base,
        "played_ms": int(round((stream_bytes + fallback_bytes) / per_ms)),
        "planned_duration_ms": item.duration_ms,
        "offset_ms": offset_ms,
        "end_reason": end_reason,
        "kind": "relay",
        "url": item.url,
        "stream_ms": int(round(stream_bytes / per_ms)),
        "fallback_ms": int(round(fallback_bytes / per_ms)),
        "silence_ms": int(round((fed - stream_bytes - fallback_bytes) / per_ms)),
        "reconnects": max(0, stream.starts - 1),
    }
    if error:
        finished["error"] = error
    stage.reporter.emit(events.PLAYBACK_FINISHED, **finished)
    if end_reason == "complete":
        stage.reporter.set_fault("player_crashed", False, item_id=item.id)

def _fall_back(
    stage: Stage, base: dict[str, Any], item: Item, down_ms: float, why: str, position_ms: int, done: bool
) -> Decoder | None:
    """The stream of a relay stayed down past the grace: raise the fault, start the fallback if there is one."""
    reason = f"no audio from {item.url} for {down_ms / 1000:.1f} s ({why or 'no connection'})"
    decoder: Decoder | None = None
    if item.media is None:
        missing = "the item has no fallback"
    elif done:
        missing = "the fallback was already played to its end"
    else:
        path = stage.cache.path(item.media.sha256)
        missing = "the fallback is not in the cache"
        if path is not None:
            try:
                decoder = Decoder(path, position_ms, SAMPLE_RATE, CHANNELS)
            except DecoderError as exc:
                missing = f"the fallback cannot be decoded: {exc}"
    stage.reporter.set_fault("stream_unavailable", True, item_id=item.id, url=item.url, reason=reason,
                    fallback=decoder is not None)
    if decoder is None:
        logger.warning("rx %s: relay %s: %s; %s, the slot stays quiet", stage.rx, item.id, reason, missing)
        return None
    assert item.media is not None
    logger.warning("rx %s: relay %s: %s; playing the fallback from %d ms", stage.rx, item.id, reason, position_ms)
    stage.reporter.emit(events.RELAY_FALLBACK, **base, url=item.url, reason=reason, down_ms=int(down_ms),
              sha256=item.media.sha256, fallback_offset_ms=position_ms)
    return decoder
