"""Reconnect backoff: exponential, jittered so receivers do not reconnect in lockstep, capped."""

from __future__ import annotations

import random

from receiver.mqtt import RECONNECT_MAX_S, RECONNECT_MIN_S, backoff_delay


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    first = [backoff_delay(1, rng) for _ in range(50)]
    assert all(d == RECONNECT_MIN_S for d in first)
    fourth = [backoff_delay(4, rng) for _ in range(500)]
    assert all(RECONNECT_MIN_S <= d <= 8 * RECONNECT_MIN_S for d in fourth)
    assert len({round(d, 3) for d in fourth}) > 400  # spread out, not one value for everyone
    late = [backoff_delay(n, rng) for n in range(10, 200)]
    assert max(late) <= RECONNECT_MAX_S and max(late) > RECONNECT_MAX_S / 2


def test_the_agent_never_loads_the_simulators_pool() -> None:
    """A Pi runs receiver.mqtt.session only; the selector pool and its fault injection stay with the simulator."""
    import subprocess
    import sys

    code = ("import sys, receiver.agent, receiver.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('receiver.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "receiver.mqtt.session" in loaded and "receiver.mqtt.pool" not in loaded and "receiver.swarm" not in loaded
