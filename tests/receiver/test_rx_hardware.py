"""The amplifier relay and fault inputs on gpiozero's mock pin factory (GPIO cannot exist here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import topics

from rx_support import Media, MediaServer, make_item, now_ms, outbox_events, signed_manifest, wait_until


def test_relay_warms_up_before_the_item_and_switches_off_after_the_hold(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    from gpiozero import Device

    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url, amp_pin=17, amp_warmup_s=1.5, amp_hold_s=0.5,
                         amplifier_fault_pin=22, gpio_mock=True)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 3000
    agent = Agent(config)
    pin = Device.pin_factory.pin(17)
    fault_pin = Device.pin_factory.pin(22)
    try:
        agent.handle_message(topics.sched(scope),
                             signed_manifest(signing_key, scope, 1, [make_item("n", start, 1000, sine_mp3.ref)]))
        agent.start()
        assert pin.state is False
        wait_until(lambda: pin.state, timeout=10)
        switched_on = now_ms()
        assert start - switched_on >= 1000  # about the warm-up (1.5 s) plus the pre-roll before t0
        wait_until(lambda: any(e["type"] == "playback.finished" for e in outbox_events(agent)), timeout=10)
        assert pin.state  # held a little after the item
        wait_until(lambda: not pin.state, timeout=10)
        fault_pin.drive_low()  # the amplifier's fault line goes active
        wait_until(lambda: any(e.get("fault") == "amplifier_fault" for e in outbox_events(agent)), timeout=5)
        fault_pin.drive_high()
        wait_until(lambda: any(e["type"] == "fault.cleared" and e.get("fault") == "amplifier_fault"
                               for e in outbox_events(agent)), timeout=5)
        changes = [e["on"] for e in outbox_events(agent) if e["type"] == "amplifier.changed"]
    finally:
        agent.stop()
    assert changes == [True, False]
    assert pin.state is False
