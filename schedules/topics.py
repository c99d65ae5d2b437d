"""MQTT protocol v1 topic names (see DESIGN.md, "MQTT protocol v1")."""

PREFIX = "loaxa/v1"
PROTOCOL_VERSION = 1


def conf(rx_id: str) -> str:
    """Retained, signed configuration of one receiver."""
    return f"{PREFIX}/conf/{rx_id}"


def sched(scope: str) -> str:
    """Retained, signed manifest of one scope (``area/<id>`` or ``rx/<id>``)."""
    return f"{PREFIX}/sched/{scope}"


def cmd(scope: str) -> str:
    """Signed, non-retained command to a scope."""
    return f"{PREFIX}/cmd/{scope}"


def alert(scope: str) -> str:
    """Retained, signed state of the alert running on a scope (empty once it ended)."""
    return f"{PREFIX}/alert/{scope}"


def rx_status(rx_id: str) -> str:
    """Retained ``online``/``offline`` presence of one receiver."""
    return f"{PREFIX}/rx/{rx_id}/status"


def rx_hb(rx_id: str) -> str:
    """Heartbeat of one receiver."""
    return f"{PREFIX}/rx/{rx_id}/hb"


def rx_events(rx_id: str) -> str:
    """Event stream (playback, faults, acks) of one receiver."""
    return f"{PREFIX}/rx/{rx_id}/events"


def area_scope(area_id: str) -> str:
    """Scope name of an area."""
    return f"area/{area_id}"


def rx_scope(rx_id: str) -> str:
    """Scope name of a single receiver."""
    return f"rx/{rx_id}"


def parse_rx_topic(topic: str) -> tuple[str, str] | None:
    """Split ``loaxa/v1/rx/<rx>/<kind>`` into ``(rx, kind)``; None for anything else."""
    head = PREFIX + "/rx/"
    if not topic.startswith(head):
        return None
    rest = topic[len(head):]
    rx_id, sep, kind = rest.rpartition("/")
    if not sep or not rx_id or kind not in ("status", "hb", "events"):
        return None
    return rx_id, kind


def scope_of_sched_topic(topic: str) -> str | None:
    """The scope a ``sched`` topic carries, or None."""
    head = PREFIX + "/sched/"
    return topic[len(head):] if topic.startswith(head) else None


def scope_of_cmd_topic(topic: str) -> str | None:
    """The scope a ``cmd`` topic carries, or None."""
    head = PREFIX + "/cmd/"
    return topic[len(head):] if topic.startswith(head) else None


def scope_topics(scope: str) -> tuple[str, str, str]:
    """What a receiver following ``scope`` subscribes to: its manifest, its commands and its alert state."""
    return sched(scope), cmd(scope), alert(scope)


def scope_of_alert_topic(topic: str) -> str | None:
    """The scope an ``alert`` topic carries, or None."""
    head = PREFIX + "/alert/"
    return topic[len(head):] if topic.startswith(head) else None
