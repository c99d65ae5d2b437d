"""The test-tone engine: the ``test_tone`` command's sine, reported as ``test_tone.*`` events."""

from __future__ import annotations

import logging
from typing import Any

from receiver import tone as sine
from receiver.gate import Tone
from receiver.hardware import Hardware
from receiver.playout.stage import CHANNELS, CHUNK_MS, JOIN_LEAD_MS, SAMPLE_RATE, Stage, frames, now_ms_f
from receiver.sinks import Output
from schedules import events
from schedules.events import now_ms
from schedules.manifest import Item

logger = logging.getLogger(__name__)


def play_tone(stage: Stage, pending: Tone, hardware: Hardware | None) -> None:
    """Play a ``test_tone`` command: a sine at the programme volume, reported as ``test_tone.*`` events.

    It pre-empts the programme (rejoined afterwards where the schedule
    stands) but never an emergency: one that is ready ends the tone
    (``end_reason`` ``preempted``). ``test_tone.started`` carries the actual
    start; ``test_tone.finished`` how long it played and why it ended.
    """
    stage.orders.take_tone(pending)
    command = pending.command
    base = {"scope": pending.scope, "nonce": command.nonce, "frequency_hz": pending.frequency_hz,
            "duration_s": pending.duration_s}
    if now_ms() >= command.expires:
        stage.reporter.emit(events.TEST_TONE_FINISHED, **base, played_ms=0, end_reason="expired")
        return
    item = Item(id=f"test-tone-{command.nonce[:12]}", title="test tone", start_ms=now_ms() + JOIN_LEAD_MS,
                duration_ms=pending.duration_s * 1000, priority="normal", media=None, kind="tone")
    if hardware is not None and hardware.amplifier(True):
        stage.reporter.emit(events.AMPLIFIER_CHANGED, on=True, item_id=item.id)
    total = frames(item.duration_ms) // (2 * CHANNELS)
    chunk_frames = frames(CHUNK_MS) // (2 * CHANNELS)
    volume = stage.volume()
    output: Output | None = None
    done = 0
    end_reason = "complete"
    error = ""
    try:
        output = stage.go_live(item, volume, item.start_ms)
        if output is None:
            return
        while done < total:
            must_end = stage.must_end(item)
            if must_end is not None:
                end_reason = must_end
                break
            n = min(chunk_frames, total - done)
            output.write(sine.sine(pending.frequency_hz, SAMPLE_RATE, done, n, total))
            done += n
            if done == n:
                stage.reporter.emit(events.TEST_TONE_STARTED, **base, volume=volume,
                          actual_start_ms=int(round(output.first_sample_ms or now_ms_f())))
    except Exception as exc:
        logger.exception("rx %s: playing the test tone failed", stage.rx)
        end_reason = "error"
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stage.end_live()
        stage.close_output(output, item)
    fields: dict[str, Any] = {**base, "played_ms": done * 1000 // SAMPLE_RATE, "end_reason": end_reason}
    if error:
        fields["error"] = error
    stage.reporter.emit(events.TEST_TONE_FINISHED, **fields)
