"""GPIO: the amplifier relay and the fault inputs. The only module of the receiver that imports gpiozero.

The relay powers the amplifier a configurable warm-up before a session and
off a hold time after its last item, so amplifiers do not burn all day. Fault
inputs (mains power lost, amplifier fault, speaker line open) are GPIO pins
read through gpiozero with pull-ups: an input pulled low (active) raises its
fault, released clears it. ``mock = True`` uses gpiozero's mock pin factory
(tests, the simulator, a desk without a Pi).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from schedules import vocab

logger = logging.getLogger(__name__)

FAULT_INPUTS = vocab.HARDWARE_FAULTS


class HardwareError(RuntimeError):
    """GPIO is unavailable (no gpiozero, no pin factory, a pin in use)."""


def _factory(mock: bool) -> object | None:
    try:
        from gpiozero import Device
    except ImportError as exc:
        raise HardwareError("gpiozero is not installed (pip install loaxa[receiver])") from exc
    if mock:
        from gpiozero.pins.mock import MockFactory

        if not isinstance(Device.pin_factory, MockFactory):
            Device.pin_factory = MockFactory()
    factory: object | None = Device.pin_factory
    return factory


class Hardware:
    """The relay and the fault inputs of one box."""

    def __init__(
        self,
        *,
        amp_pin: int | None,
        fault_pins: dict[str, int],
        on_fault: Callable[[str, bool], object],
        mock: bool = False,
    ) -> None:
        self._lock = threading.Lock()
        self.amp_on = False
        self._relay = None
        self._inputs: dict[str, object] = {}
        if amp_pin is None and not fault_pins:
            return
        _factory(mock)
        from gpiozero import Button, OutputDevice
        from gpiozero.exc import GPIOZeroError

        try:
            if amp_pin is not None:
                self._relay = OutputDevice(amp_pin, active_high=True, initial_value=False)
            for name, pin in fault_pins.items():
                if name not in FAULT_INPUTS:
                    raise HardwareError(f"unknown fault input {name!r}")
                button = Button(pin, pull_up=True, bounce_time=None)
                button.when_pressed = lambda _d=None, n=name: on_fault(n, True)
                button.when_released = lambda _d=None, n=name: on_fault(n, False)
                self._inputs[name] = button
                if button.is_pressed:
                    on_fault(name, True)
        except GPIOZeroError as exc:
            self.close()
            raise HardwareError(f"GPIO: {exc}") from exc

    def amplifier(self, on: bool) -> bool:
        """Switch the relay; returns whether it changed."""
        with self._lock:
            if self._relay is None or on == self.amp_on:
                return False
            if on:
                self._relay.on()
            else:
                self._relay.off()
            self.amp_on = on
        logger.info("amplifier relay %s", "on" if on else "off")
        return True

    def close(self) -> None:
        """Relay off, pins released."""
        with self._lock:
            if self._relay is not None:
                self._relay.off()
                self._relay.close()
                self._relay = None
            self.amp_on = False
            for device in self._inputs.values():
                device.close()  # type: ignore[attr-defined]
            self._inputs.clear()
