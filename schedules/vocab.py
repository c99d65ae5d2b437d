"""The words a receiver may use in its events: fault codes, end reasons, failure codes.

Receivers are trusted to report, not to author text. The receiver emits only these
(``schedules.events.make_event`` refuses anything else), and the controller's telemetry
stores any other value as ``unknown``, keeps the raw value as data and raises
``protocol_violation`` for the receiver that sent it. Labels for people live in the
controller; this module holds only the machine words both sides agree on.
"""

from __future__ import annotations

from typing import Any

UNKNOWN = "unknown"
PROTOCOL_VIOLATION = "protocol_violation"
MANIFEST_MISSING = "manifest_missing"  # raised by the controller: a followed scope's manifest is not held

# Faults a receiver raises and clears (agent, hardware inputs, cache), plus the one the
# controller raises for a receiver that broke the protocol.
FAULTS = frozenset({
    "amplifier_fault", "mains_power_lost", "speaker_line_open",  # hardware inputs (GPIO)
    "clock_unsynchronised", "overheating", "disk_nearly_full", "disk_full",
    "signature_refused", "conf_refused",
    "download_failed", "media_unreachable", "checksum_mismatch",
    "no_audio_device", "player_crashed", "stream_unavailable",
    PROTOCOL_VIOLATION, MANIFEST_MISSING,
})
HARDWARE_FAULTS = ("mains_power_lost", "amplifier_fault", "speaker_line_open")

# Why a play (or a test tone) ended, as ``end_reason`` of ``playback.finished``.
END_REASONS = frozenset({
    "complete", "media_end", "preempted", "stopped_by_command", "stopped", "decoder_error", "error", "expired",
    "withdrawn",  # the controller took the item out of the programme while it played (a relay stopped)
})

# Why a play failed, as ``code`` of ``playback.failed``.
FAILURE_CODES = frozenset({
    "media.not_cached", "decoder.missing", "decoder.no_audio", "play.error", "relay.unavailable",
})

# Why a due play never started on a receiver: the controller decides these from its presence
# history (``presence`` table), its registry and the manifests the receiver accepted; receivers
# never send them. ``as-run`` rows and the CSV carry the code, pages its label.
MISS_OFFLINE = "offline"  # offline (or never connected) through the whole play window
MISS_NO_START = "no_start"  # online through the window, did not report starting
MISS_CAME_ONLINE = "came_online"  # offline at the start, online during the play, did not join it
MISS_WENT_OFFLINE = "went_offline"  # online at the start, lost during the play, no start reported
MISS_NO_MANIFEST = "no_manifest"  # online, but had never accepted a manifest (schedule)
MISS_NOT_PROVISIONED = "not_provisioned"  # registered with the controller only after the play started
MISS_REASONS = frozenset({
    MISS_OFFLINE, MISS_NO_START, MISS_CAME_ONLINE, MISS_WENT_OFFLINE, MISS_NO_MANIFEST, MISS_NOT_PROVISIONED,
})

# A play the receiver joined under way (``offset_ms`` > 0 in ``playback.started``/``finished``):
# the marker as-run rows carry next to their reason, with the offset.
LATE_JOIN = "late_join"

# Which field of which event type carries a word of which vocabulary.
_FIELDS: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "fault.raised": (("fault", FAULTS),),
    "fault.cleared": (("fault", FAULTS),),
    "playback.finished": (("end_reason", END_REASONS),),
    "test_tone.finished": (("end_reason", END_REASONS),),
    "playback.failed": (("code", FAILURE_CODES),),
}


def violations(event: dict[str, Any]) -> list[tuple[str, Any]]:
    """The ``(field, value)`` pairs of ``event`` that are not words of the shared vocabulary."""
    bad = []
    for field, words in _FIELDS.get(str(event.get("type")), ()):
        if field in event and not (isinstance(event[field], str) and event[field] in words):
            bad.append((field, event[field]))
    if event.get("type") in ("fault.raised", "fault.cleared") and "fault" not in event:
        bad.append(("fault", None))
    return bad


def sanitise(event: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """A copy of ``event`` with every word outside the vocabulary replaced by ``unknown``.

    The raw values are kept under ``raw_<field>`` (as data, cut to 200 characters) so that
    people can see what was sent; returns the copy and the violations found.
    """
    bad = violations(event)
    if not bad:
        return event, []
    clean = dict(event)
    for field, value in bad:
        clean[field] = UNKNOWN
        clean[f"raw_{field}"] = str(value)[:200]
    return clean, bad
