"""Benchmark: plan and publish a province's 48-hour window.

A province of 10 districts, 150 communes and 3,000 receivers with a full week
of items. Prints the time to plan, to plan + sign + publish everything, the
number of MQTT messages for manifests (per area) and for receiver configs (per
receiver), and the time of a raw paho baseline publishing the same messages.

    .venv/bin/python bench/plan.py [--districts 10] [--communes 15] [--receivers 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from controller import create_app, db  # noqa: E402
from controller.broker import EmbeddedBroker  # noqa: E402
from controller.db import session_scope  # noqa: E402
from controller.models import Area, Bulletin, Media, ProgrammeItem, Receiver  # noqa: E402
from controller.mqtt import parse_url  # noqa: E402
from controller.services.programme import load_programme  # noqa: E402
from schedules.events import now_ms  # noqa: E402
from schedules.planner import plan  # noqa: E402


def seed(app, districts: int, communes: int, receivers: int) -> None:
    """Areas, receivers, 20 media and a week of items at every level."""
    now = now_ms()
    with session_scope(app) as s:
        s.add(Area(id="tinh", name="Tỉnh", level="province"))
        for n in range(20):
            s.add(Media(sha256=f"{n:064x}", format="mp3", bytes=300_000, duration_ms=(3 + n % 7) * 60_000,
                        created_ms=now))
        s.flush()
        for n in range(20):
            s.add(Bulletin(id=n + 1, title=f"Bản tin {n}", area_id="tinh", status="ready",
                           media_sha256=f"{n:064x}", created_ms=now))
        s.flush()
        common = dict(duration_ms=5 * 60_000, status="approved", created_ms=now, kind="audio")
        s.add(ProgrammeItem(bulletin_id=1, area_id="tinh", at_s=19 * 3600, mode="daily", priority="priority",
                            **common))
        for d in range(districts):
            did = f"h{d:02d}"
            s.add(Area(id=did, name=f"Huyện {d}", level="district", parent_id="tinh"))
            for k, key in enumerate(("morning", "noon", "evening")):
                s.add(ProgrammeItem(bulletin_id=2 + k, area_id=did, session_key=key, mode="daily", **common))
            for c in range(communes):
                cid = f"{did}/x{c:02d}"
                s.add(Area(id=cid, name=f"Xã {c}", level="commune", parent_id=did))
                for k, key in enumerate(("morning", "evening")):
                    s.add(ProgrammeItem(bulletin_id=5 + (c + k) % 15, area_id=cid, session_key=key, mode="daily",
                                        repeat_count=2, repeat_gap_s=10, **common))
                s.add(ProgrammeItem(bulletin_id=6, area_id=cid, at_s=12 * 3600, mode="weekdays",
                                    weekdays=0b0010101, **common))
                for r in range(receivers):
                    rid = f"{did}-x{c:02d}-{r:02d}"
                    s.add(Receiver(id=rid, area_id=cid, name=rid, token_hash=f"{hash(rid) & (2**128 - 1):064x}",
                                   created_ms=now))


def raw_paho(url: str, messages: list[tuple[str, bytes]]) -> float:
    """Seconds for raw paho to publish the same messages retained with QoS 1 and get every PUBACK."""
    host, port, *_ = parse_url(url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    t = time.perf_counter()
    infos = [client.publish(topic.replace("loaxa/v1/", "bench/raw/"), payload, qos=1, retain=True)
             for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - t
    for topic, _ in messages:  # leave no retained litter behind
        client.publish(topic.replace("loaxa/v1/", "bench/raw/"), b"", qos=1, retain=True)
    client.disconnect()
    client.loop_stop()
    return elapsed


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--districts", type=int, default=10)
    ap.add_argument("--communes", type=int, default=15, help="per district")
    ap.add_argument("--receivers", type=int, default=20, help="per commune")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loaxa-bench-plan-"))
    broker = EmbeddedBroker(tmp / "broker").start()
    app = create_app({"VAR_DIR": str(tmp / "var"), "MQTT_URL": broker.url, "MQTT_CLIENT_ID": "bench-plan"})
    db.upgrade(app.config["DATABASE_URL"])
    svc = app.extensions["loaxa.services"]
    sent: list[tuple[str, bytes]] = []
    try:
        svc.start()
        svc.link.connected.wait(10)
        time.sleep(1)  # the on-connect publication of the empty database is over
        seed(app, args.districts, args.communes, args.receivers)
        with session_scope(app) as s:
            programme, nodes = load_programme(s)
            n_items = len(programme.entries)
            n_rx = s.query(Receiver).count()
        now = now_ms()  # one instant for every call: the rolling window alone must not change the content
        t = time.perf_counter()
        result = plan(programme, nodes, now)
        plan_s = time.perf_counter() - t
        original = svc.dispatcher._publish

        def counting(topic, payload, retain):
            sent.append((topic, payload))
            original(topic, payload, retain)

        svc.dispatcher._publish = counting
        t = time.perf_counter()
        svc.dispatcher.publish_everything(now)
        publish_s = time.perf_counter() - t
        manifests = [m for m in sent if "/sched/" in m[0]]
        confs = [m for m in sent if "/conf/" in m[0]]
        sent.clear()
        t = time.perf_counter()
        again = svc.dispatcher.publish_everything(now)
        unchanged_s = time.perf_counter() - t
        raw_s = raw_paho(broker.url, manifests + confs)
        figures = {
            "areas": len(nodes), "receivers": n_rx, "programme_items": n_items,
            "occurrences_48h": sum(len(m.items) for m in result.manifests.values()),
            "plan_s": round(plan_s, 3), "plan_sign_publish_s": round(publish_s, 3),
            "manifest_messages": len(manifests), "conf_messages": len(confs),
            "manifest_bytes": sum(len(p) for _, p in manifests),
            "republish_unchanged_messages": again, "republish_unchanged_s": round(unchanged_s, 3),
            "raw_paho_same_messages_s": round(raw_s, 3),
            "ratio_publish_vs_raw_paho": round(publish_s / raw_s, 1) if raw_s else None,
        }
        print(json.dumps(figures, indent=2, ensure_ascii=False))
    finally:
        svc.stop()
        broker.stop()


if __name__ == "__main__":
    main()
