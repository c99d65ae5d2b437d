"""The player: walks the merged timeline and starts the right engine at the right second.

Its thread (:meth:`Player.run`) looks at what is due, in this order: an accepted
emergency whose media is here (it pre-empts anything, at its own volume, the
amplifier on at once), a waiting test tone, then the next item of the timeline
(a relay, a media file, or a silence separator), started when its pre-roll
begins. An item whose media is not cached at its start is reported as
``playback.failed`` (``media.not_cached``). An item pre-empted by an emergency
or a test tone is rejoined afterwards where the schedule then stands.

The amplifier relay (:mod:`receiver.hardware`) is switched on a warm-up before
the first item of a session and off a hold time after the last.

Commands reach the player through :meth:`Player.obey` once the gate
(:mod:`receiver.gate`) has accepted them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

from receiver.cache import MediaCache
from receiver.config import ReceiverConfig
from receiver.gate import Emergency, Orders, Tone, refusal
from receiver.hardware import Hardware
from receiver.holdings import Holdings
from receiver.playout.item import play_item
from receiver.playout.relay import play_relay
from receiver.playout.stage import JOIN_LEAD_MS, Stage
from receiver.playout.tone import play_tone
from receiver.reporter import Reporter
from receiver.sinks import Sink
from schedules import events
from schedules.commands import Command
from schedules.events import now_ms
from schedules.manifest import Item

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 60.0
DEFAULT_VOLUME = 80


class Player:
    """What plays, when, and how loud."""

    def __init__(self, rx: str, config: ReceiverConfig, sink: Sink, cache: MediaCache, holdings: Holdings,
                 orders: Orders, reporter: Reporter, hardware: Hardware | None, stop: threading.Event,
                 download_wake: threading.Event) -> None:
        self.rx = rx
        self.config = config
        self.cache = cache
        self.holdings = holdings
        self.orders = orders
        self.reporter = reporter
        self.hardware = hardware
        self._stop = stop
        self._download_wake = download_wake
        self.wake = threading.Event()
        """Set it to look at the timeline again now (new manifest, media arrived, command)."""
        self._volume: int | None = None
        self._alert_scope: str | None = None
        self.stage = Stage(rx, config, sink, cache, holdings, orders, reporter, stop, lambda: self.volume)

    @property
    def volume(self) -> int:
        """The programme volume: the last ``volume`` command, else the conf's, else 80."""
        if self._volume is not None:
            return self._volume
        conf = self.holdings.conf
        return conf.volume if conf is not None else DEFAULT_VOLUME

    @property
    def playing(self) -> str | None:
        """The id of the item playing now, or None."""
        item = self.stage.playing
        return item.id if item is not None else None

    def interrupt(self) -> None:
        """The agent stops: end the wait and the chunk being written."""
        self.wake.set()
        output = self.stage.output
        if output is not None:
            output.interrupt()

    # -------------------------------------------------------------- commands

    def obey(self, scope: str, command: Command, body: dict[str, Any] | None) -> dict[str, Any] | None:
        """Carry out an accepted command; the fields its ``command.ack`` adds, or None when refused here."""
        ack: dict[str, Any] = {}
        stage = self.stage
        if command.is_alert:
            alert = Emergency(scope, command, command.item(), command.volume if command.volume is not None else 100)
            ack["item_id"] = alert.item.id
            if not self.orders.offer_alert(alert, now_ms()):
                ack["already"] = True  # the alert state came first: it plays once
            self._download_wake.set()
        elif command.action == "stop":
            only = command.args.get("id")
            if isinstance(only, str):  # stop that alert only, wherever it stands
                ack["stopped"] = self.end_alert(only)
                self.wake.set()
                return ack
            emergency, pending_tone = self.orders.clear()
            if stage.playing is not None:
                stage.stop_current.set()
            ack["stopped"] = self.playing or (emergency.item.id if emergency else None)
            if pending_tone is not None:
                self.reporter.emit(events.TEST_TONE_FINISHED, scope=pending_tone.scope,
                                   nonce=pending_tone.command.nonce, played_ms=0, end_reason="stopped_by_command")
        elif command.action == "test_tone":
            busy = self._emergency_busy()
            if busy is not None:
                reason = f"emergency {busy} is playing; no test tone over it"
                logger.warning("rx %s: refused command on %s: %s (cmd.busy)", self.rx, scope, reason)
                self.reporter.emit_all(refusal(scope, body, "cmd.busy", reason))
                return None
            new = Tone(scope, command, command.tone_duration_s, command.tone_frequency_hz)
            with self.orders.lock:
                self.orders.tone = new
            ack.update(duration_s=new.duration_s, frequency_hz=new.frequency_hz)
        elif command.action == "volume":
            self._volume = command.volume
            output = stage.output
            if output is not None and (stage.playing is None or stage.playing.priority != "emergency"):
                output.set_volume(self.volume)
            ack["volume"] = command.volume
        self.wake.set()
        return ack

    def join_alert(self, scope: str, command: Command) -> dict[str, Any] | None:
        """A retained alert state: join the alert where it stands unless it was taken already.

        The fields of its ``command.ack`` (``joined``), or None when this receiver
        already has it (it arrived by command, or the state was re-delivered).
        """
        item = command.item()
        emergency = Emergency(scope, command, item, command.volume if command.volume is not None else 100,
                              join=True)
        if not self.orders.offer_alert(emergency, now_ms()):
            return None
        logger.warning("rx %s: joining alert %s of %s under way (%d ms in)", self.rx, item.id, scope,
                       now_ms() - item.start_ms)
        self._download_wake.set()
        self.wake.set()
        return {"item_id": item.id, "joined": True}

    def alert_ended(self, scope: str) -> str | None:
        """The alert state of ``scope`` was cleared: end the alert of that scope if it waits or plays."""
        emergency = self.orders.emergency
        playing = self.stage.playing
        ids = [e.item.id for e in (emergency,) if e is not None and e.scope == scope]
        if playing is not None and playing.priority == "emergency" and self._alert_scope == scope:
            ids.append(playing.id)
        return self.end_alert(ids[0]) if ids else None

    def end_alert(self, alert_id: str) -> str | None:
        """End the alert ``alert_id`` (waiting or playing); its id, or None when it is neither."""
        stopped = None
        with self.orders.lock:
            if self.orders.emergency is not None and self.orders.emergency.item.id == alert_id:
                self.orders.emergency = None
                stopped = alert_id
        playing = self.stage.playing
        if playing is not None and playing.priority == "emergency" and playing.id == alert_id:
            self.stage.stop_current.set()
            stopped = alert_id
        if stopped:
            logger.warning("rx %s: alert %s ended by the controller", self.rx, alert_id)
        return stopped

    def _emergency_busy(self) -> str | None:
        """The id of the emergency playing, or about to (accepted and its media here), else None."""
        playing = self.stage.playing
        if playing is not None and playing.priority == "emergency":
            return playing.id
        emergency = self.orders.emergency
        if emergency is not None and emergency.ready(self.cache):
            return emergency.item.id
        return None

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """The player thread's loop, until the agent stops."""
        try:
            while not self._stop.is_set():
                self.wake.clear()
                try:
                    wait_s = self.step()
                except Exception:
                    logger.exception("rx %s: player error", self.rx)
                    wait_s = 1.0
                if wait_s > 0:
                    self.wake.wait(wait_s)
        finally:
            self.stage.discard_prepared()

    def step(self) -> float:
        """Play what is due when its preroll begins; returns how long to wait before looking again."""
        stage = self.stage
        now = now_ms()
        stage.forget_old_plays(now)
        emergency = self.orders.emergency
        if emergency is not None:
            wait_s = self._emergency_step(emergency, now)
            if wait_s is not None:
                return wait_s
        pending_tone = self.orders.tone
        if pending_tone is not None:
            play_tone(stage, pending_tone, self.hardware)
            return 0.0
        nxt = stage.next_item(now)
        if nxt is None:
            stage.discard_prepared()
            return min(IDLE_WAIT_S, self._drive_amplifier(None, now))
        scope, item = nxt
        hold_wait = self._drive_amplifier(item, now)
        lead_ms = item.start_ms - self.config.preroll_ms - now
        if lead_ms > 0:
            stage.discard_prepared()
            warmup_ms = self.config.amp_warmup_s * 1000 if self._amp_waits() else 0
            return max(0.0, min((lead_ms - warmup_ms) / 1000.0, IDLE_WAIT_S, hold_wait))
        if item.kind == "relay" and item.url:
            if item.media is not None:
                self.cache.touch(item.media.sha256)
            play_relay(stage, scope, item)
            return 0.0
        if item.media is None:
            # Silence (a separator): nothing to play; its slot stays quiet.
            stage.played[(item.id, item.start_ms)] = item.end_ms
            return 0.0
        path = self.cache.path(item.media.sha256)
        if path is None:
            if now < item.start_ms:
                self._download_wake.set()
                return (item.start_ms - now) / 1000.0
            stage.played[(item.id, item.start_ms)] = item.end_ms
            self.reporter.emit(
                events.PLAYBACK_FAILED,
                item_id=item.id,
                scope=scope,
                planned_start_ms=item.start_ms,
                sha256=item.media.sha256,
                code="media.not_cached",
                reason=f"media {item.media.path} not cached at start time",
            )
            return 0.0
        self.cache.touch(item.media.sha256)
        play_item(stage, scope, item, path)
        return 0.0

    def _emergency_step(self, emergency: Emergency, now: int) -> float | None:
        """Play a pending alert now if it can play; None lets the programme go on meanwhile."""
        ready = emergency.ready(self.cache)
        if not ready and now < emergency.command.expires:
            self._download_wake.set()
            return None
        base = {"item_id": emergency.item.id, "scope": emergency.scope, "planned_start_ms": emergency.command.ts}
        if not ready:
            self.orders.drop_emergency(emergency)
            self.reporter.emit(
                events.PLAYBACK_FAILED,
                **base,
                sha256=emergency.media.sha256 if emergency.media else None,
                code="media.not_cached",
                reason=f"{emergency.command.action} media not cached before the command expired",
                mode=emergency.mode,
            )
            return 0.0
        pending_tone = self.orders.take_emergency(emergency)
        if pending_tone is not None:
            self.reporter.emit(events.TEST_TONE_FINISHED, scope=pending_tone.scope, nonce=pending_tone.command.nonce,
                               played_ms=0, end_reason="preempted")
        # Joined from the alert state: where it stands now. Else from its beginning, after a short lead
        # (as when joining an item) that leaves time to start the decoder: nothing is cut.
        item = emergency.item if emergency.join else replace(emergency.item, start_ms=now_ms() + JOIN_LEAD_MS)
        if self.hardware is not None and self.hardware.amplifier(True):  # no warm-up wait for an emergency
            self.reporter.emit(events.AMPLIFIER_CHANGED, on=True, item_id=item.id)
        tags = {"mode": emergency.mode}
        self._alert_scope = emergency.scope
        try:
            if item.kind == "relay":
                play_relay(self.stage, emergency.scope, item, volume=emergency.volume, tags=tags)
            else:
                path = self.cache.path(item.media.sha256) if item.media else None
                if path is None:  # evicted between the check and now: cannot happen with the cache's keep set
                    return 0.0
                play_item(self.stage, emergency.scope, item, path, volume=emergency.volume, tags=tags)
        finally:
            self._alert_scope = None
        return 0.0

    # ------------------------------------------------------------- amplifier

    def _amp_waits(self) -> bool:
        """Whether the relay is wired and off, so the player must wake a warm-up early."""
        return self.hardware is not None and self.config.amp_pin is not None and not self.hardware.amp_on

    def _drive_amplifier(self, item: Item | None, now: int) -> float:
        """Relay on a warm-up before the next item, off a hold time after the last; returns when to look again."""
        if self.hardware is None or self.config.amp_pin is None:
            return IDLE_WAIT_S
        warmup_ms = self.config.amp_warmup_s * 1000
        if item is not None and item.start_ms - self.config.preroll_ms - warmup_ms <= now:
            if self.hardware.amplifier(True):
                self.reporter.emit(events.AMPLIFIER_CHANGED, on=True, item_id=item.id)
            return IDLE_WAIT_S
        if self.hardware.amp_on:
            off_at = self.stage.last_play_end_ms + self.config.amp_hold_s * 1000
            if now >= off_at:
                if self.hardware.amplifier(False):
                    self.reporter.emit(events.AMPLIFIER_CHANGED, on=False)
                return IDLE_WAIT_S
            return max(0.05, (off_at - now) / 1000.0)
        return IDLE_WAIT_S
