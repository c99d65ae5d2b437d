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
