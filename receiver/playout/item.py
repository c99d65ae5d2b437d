"""The item engine: a media file from the cache, played at its second, reported as it went.

A start missed by at most ``LATE_START_TOLERANCE_MS`` (e.g. right after the
previous item) plays from the beginning; later than that, the item is joined at
the elapsed offset, as after a restart mid-item. A decoder that dies in the
middle is restarted where the content stood and reported as the
``player_crashed`` fault (cleared when an item next plays to its end cleanly).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from receiver.decoder import Decoder, DecoderError
from receiver.playout.stage import CHANNELS, CHUNK_MS, SAMPLE_RATE, Stage, frames, now_ms_f, start_decoder
from receiver.sinks import Output
from schedules import events
from schedules.events import now_ms
from schedules.manifest import Item

logger = logging.getLogger(__name__)

MAX_DECODER_RESTARTS = 3
"""A decoder that dies more often than this in one item ends the item (``decoder_error``): a bad file, not bad luck."""
CRASH_END_MARGIN_MS = 500
"""A decoder that dies this close to the end of its media has finished, not crashed."""


def _crash(decoder: Decoder) -> str | None:
    """Why a decoder that stopped giving audio died, or None when it ended cleanly (status 0)."""
    decoder.close()  # waits for it to exit: its status tells a clean end from a crash
    status = decoder.returncode
    if status == 0:
        return None
    how = f"killed by signal {-status}" if status is not None and status < 0 else f"exited with status {status}"
    detail = decoder.errors()
    return f"ffmpeg {how}" + (f": {detail}" if detail else "")


def play_item(stage: Stage, scope: str, item: Item, path: Path, volume: int | None = None,
              tags: dict[str, Any] | None = None) -> None:
    """Play one item at its start (or join it under way), reporting what happened.

    A start missed by at most ``LATE_START_TOLERANCE_MS`` (e.g. right after
    the previous item) plays from the beginning; later than that, the item
    is joined at the elapsed offset, as after a restart mid-item.

    When ffmpeg dies in the middle (killed, or a non-zero exit before the
    media's end), the ``player_crashed`` fault is raised and a new decoder
    starts where the content stood (at most ``MAX_DECODER_RESTARTS`` times
    an item). The fault is cleared once an item plays to its end without a
    crash.

    ``tags`` (an alert's ``mode``) are added to every event of this play and to the output.
    """
    key = (item.id, item.start_ms)
    stage.played[key] = item.end_ms
    target, offset_ms = stage.start_point(item)
    base = {"item_id": item.id, "scope": scope, "planned_start_ms": item.start_ms, **(tags or {})}
    prepared = stage.take_prepared(key, offset_ms)
    if target >= item.end_ms:
        return
    assert item.media is not None
    try:
        if prepared is not None:
            decoder, buffer = prepared.decoder, prepared.buffer
        else:
            decoder, buffer = start_decoder(path, offset_ms)
    except DecoderError as exc:
        stage.reporter.emit(events.PLAYBACK_FAILED, **base, sha256=item.media.sha256, code="decoder.missing",
                            reason=str(exc))
        return
    if not buffer:
        decoder.close()
        detail = decoder.errors() or "no audio"
        stage.reporter.emit(
            events.PLAYBACK_FAILED,
            **base,
            sha256=item.media.sha256,
            code="decoder.no_audio",
            reason=f"ffmpeg produced no audio: {detail}",
        )
        return
    chunk_bytes = frames(CHUNK_MS)
    max_bytes = frames(item.end_ms - max(target, now_ms()))
    output: Output | None = None
    started = False
    fed = 0
    restarts = 0
    end_reason = "complete"
    error = ""
    try:
        # Pre-roll: the output is open and the first second decoded before t0.
        output = stage.go_live(item, stage.volume() if volume is None else volume, target, tags)
        if output is None:
            return
        pos = 0
        while fed < max_bytes:
            must_end = stage.must_end(item)
            if must_end is not None:
                end_reason = must_end
                if must_end == "preempted":
                    # Played again after the emergency, joined where the schedule then stands.
                    stage.played.pop(key, None)
                break
            if pos >= len(buffer):
                buffer = b"" if decoder.eof else decoder.read(chunk_bytes)
                pos = 0
                if not buffer:
                    position_ms = offset_ms + fed * 1000 // (SAMPLE_RATE * CHANNELS * 2)
                    crash = _crash(decoder)
                    if crash is None or position_ms >= item.media.duration_ms - CRASH_END_MARGIN_MS:
                        end_reason = "media_end"
                        break
                    restarts += 1
                    logger.error("rx %s: decoder of %s died at %d ms (%s); restart %d", stage.rx, item.id,
                                 position_ms, crash, restarts)
                    stage.reporter.set_fault("player_crashed", True, item_id=item.id, reason=crash,
                                             offset_ms=position_ms)
                    if restarts > MAX_DECODER_RESTARTS:
                        end_reason = "decoder_error"
                        error = crash
                        break
                    # The content goes on where it stopped; the output's short wait for the new decoder
                    # is made up by the drift correction, as after any late write.
                    decoder, buffer = start_decoder(path, position_ms)
                    continue
            chunk = buffer[pos : pos + min(chunk_bytes, max_bytes - fed)]
            pos += len(chunk)
            fed += len(chunk)
            output.write(stage.correct_drift(output, chunk))
            if not started:
                started = True
                actual = output.first_sample_ms or now_ms_f()
                stage.reporter.emit(
                    events.PLAYBACK_STARTED,
                    **base,
                    actual_start_ms=int(round(actual)),
                    offset_ms=offset_ms,
                    sha256=item.media.sha256,
                    priority=item.priority,
                )
            if item.end_ms - now_ms() <= stage.config.preroll_ms:
                stage.prepare_following()
    except Exception as exc:
        logger.exception("rx %s: playing %s failed", stage.rx, item.id)
        end_reason = "error"
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stage.end_live()
        if not decoder.eof:
            decoder.kill()  # reaped below, once it had time to die: keeps the next item on time
        stage.close_output(output, item)
        decoder.close()
    if end_reason == "media_end" and decoder.returncode not in (0, None) and decoder.errors():
        end_reason = "decoder_error"
        error = decoder.errors()
    if not started:
        if end_reason in ("error", "decoder_error"):
            stage.reporter.emit(events.PLAYBACK_FAILED, **base, sha256=item.media.sha256, code="play.error",
                                reason=error)
        return
    assert output is not None
    fields: dict[str, Any] = {
        **base,
        "played_ms": int(round(fed * 1000 / (SAMPLE_RATE * CHANNELS * 2))),
        "planned_duration_ms": item.duration_ms,
        "offset_ms": offset_ms,
        "end_reason": end_reason,
    }
    if restarts:
        fields["decoder_restarts"] = restarts
    if error:
        fields["error"] = error
    stage.reporter.emit(events.PLAYBACK_FINISHED, **fields)
    if end_reason in ("complete", "media_end") and not restarts:
        stage.reporter.set_fault("player_crashed", False, item_id=item.id)
