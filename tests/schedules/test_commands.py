"""Command bodies: the ``test_tone`` action's arguments are validated like every other action's."""

from __future__ import annotations

from typing import Any

import pytest

from schedules.commands import ACTIONS, Command, CommandError, make_command

NOW = 1_700_000_000_000


def test_test_tone_is_an_action_with_defaults() -> None:
    assert "test_tone" in ACTIONS
    command = make_command("area/qd", "test_tone", now_ms=NOW)
    assert (command.tone_duration_s, command.tone_frequency_hz) == (5, 1000)
    # What the controller's cluster page sends.
    command = make_command("rx/qp-07", "test_tone", {"duration_s": 5, "frequency_hz": 1000}, now_ms=NOW)
    assert Command.from_body(command.to_body()) == command


@pytest.mark.parametrize(("args", "expected"), [
    ({"duration_s": 1, "frequency_hz": 100}, (1, 100)),
    ({"duration_s": 30, "frequency_hz": 4000}, (30, 4000)),
    ({"frequency_hz": 440}, (5, 440)),
    ({"duration_s": 12}, (12, 1000)),
])
def test_test_tone_arguments_in_range(args: dict[str, Any], expected: tuple[int, int]) -> None:
    command = make_command("rx/a", "test_tone", args, now_ms=NOW)
    assert (command.tone_duration_s, command.tone_frequency_hz) == expected


@pytest.mark.parametrize(("args", "name"), [
    ({"duration_s": 0}, "duration_s"),
    ({"duration_s": 31}, "duration_s"),
    ({"duration_s": 5.0}, "duration_s"),
    ({"duration_s": "5"}, "duration_s"),
    ({"duration_s": True}, "duration_s"),
    ({"frequency_hz": 99}, "frequency_hz"),
    ({"frequency_hz": 4001}, "frequency_hz"),
    ({"frequency_hz": [1000]}, "frequency_hz"),
])
def test_bad_test_tone_arguments_are_refused_with_a_reason(args: dict[str, Any], name: str) -> None:
    body = make_command("rx/a", "test_tone", now_ms=NOW).to_body()
    body["args"] = args
    with pytest.raises(CommandError) as caught:
        Command.from_body(body)
    assert caught.value.code == "cmd.malformed" and name in str(caught.value)
    with pytest.raises(CommandError):
        make_command("rx/a", "test_tone", args, now_ms=NOW)  # the controller cannot build one either
