"""Manifest validation and the merge of several scopes' manifests."""

from __future__ import annotations

import pytest

from schedules.manifest import Item, Manifest, ManifestError, MediaRef, merge
from schedules.planner import plan_scope

MEDIA = MediaRef(sha256="b" * 64, path="/media/" + "b" * 64 + ".mp3", bytes=10, duration_ms=60_000)


def item(id_: str, start: int, dur: int = 60_000, prio: str = "normal") -> Item:
    return Item(id_, id_, start, dur, prio, MEDIA)


def manifest(scope: str, *items: Item) -> Manifest:
    return Manifest(scope, 1, 0, 0, 10**13, list(items))


def test_from_body_round_trip_and_rejections():
    m = manifest("area/x", item("pi-1", 1000))
    assert Manifest.from_body(m.to_body()).items == m.items
    body = m.to_body()
    body["items"][0]["media"]["path"] = "/media/../../etc/passwd"
    with pytest.raises(ManifestError, match="inside the media root"):
        Manifest.from_body(body)
    body = m.to_body()
    del body["items"][0]["start_ms"]
    with pytest.raises(ManifestError, match="start_ms"):
        Manifest.from_body(body)
    body = m.to_body()
    body["items"][0]["priority"] = "urgent"
    with pytest.raises(ManifestError, match="priority"):
        Manifest.from_body(body)
    body = m.to_body()
    body["version"] = "7"
    with pytest.raises(ManifestError, match="version"):
        Manifest.from_body(body)


def test_content_hash_ignores_the_rolling_window():
    a = plan_scope("area/x", [item("pi-1", 100_000)], now_ms=0)
    b = plan_scope("area/x", [item("pi-1", 100_000)], now_ms=50_000)
    assert a.content_hash() == b.content_hash()
    assert a.window_start_ms != b.window_start_ms


def test_planner_keeps_what_still_plays_and_drops_the_past():
    items = [item("past", 0, 1000), item("playing", 500, 10_000), item("later", 20_000), item("far", 10**12)]
    assert [i.id for i in plan_scope("area/x", items, now_ms=2000).items] == ["playing", "later"]


def test_merge_priority_beats_width_and_losers_are_reported():
    district = manifest("area/qd", item("d-normal", 0))
    commune = manifest("area/qd/phu", item("c-emergency", 30_000, prio="emergency"), item("c-later", 200_000))
    timeline, conflicts = merge([(0, district), (1, commune)])
    assert [i.id for _, i in timeline] == ["c-emergency", "c-later"]
    assert [(c.loser.id, c.winner.id) for c in conflicts] == [("d-normal", "c-emergency")]
    assert "lower priority" in conflicts[0].reason


def test_merge_wider_area_wins_a_tie():
    timeline, conflicts = merge([(1, manifest("area/qd/phu", item("commune", 0))),
                                 (0, manifest("area/qd", item("district", 10_000)))])
    assert [i.id for _, i in timeline] == ["district"]
    assert conflicts[0].reason == "same priority, narrower area"
