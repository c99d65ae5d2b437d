"""Benchmark: the health dashboard and reports for 10,000 receivers with a week of history.

Seeds (SQLite, migrated schema) a province of 10 districts × 40 communes × 25
receivers, each with its latest heartbeat, a week of heartbeat history at the
resolution kept (15-minute buckets: 672 rows per receiver), every playback
event of the week (5 plays a day per receiver: started + finished, some cut
short or failed), the missed plays, and a week of faults. Then prints server
time (p50/p95, Flask test client, no network) for the overview, the cluster
table (filtered, paginated, sorted), a receiver's detail page, the faults page
and a month's as-run report; and, as the baseline, a bare ``SELECT count(*)``
over the heartbeat history.

    .venv/bin/python bench/dashboard.py [--receivers-per-commune 25] [--runs 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from controller import auth, create_app, db  # noqa: E402
from controller.services.health import BUCKET_MS  # noqa: E402
from schedules.events import now_ms  # noqa: E402

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = 86_400_000


def watched_district(districts: int) -> str:
    """The district whose manager the benchmark logs in as."""
    return f"h{min(3, districts - 1):02d}"


def watched_commune(districts: int, communes: int) -> str:
    """The commune whose operator the benchmark logs in as."""
    return f"{watched_district(districts)}/x{min(7, communes - 1):02d}"


def seed(app, districts: int, communes: int, per_commune: int, days: int) -> dict[str, int]:
    """Write the areas, receivers, history, events, missed plays and faults with bulk inserts."""
    rnd = random.Random(7)
    now = now_ms()
    engine = app.extensions["loaxa.engine"]
    raw = engine.raw_connection()
    cur = raw.cursor()
    counts = {}
    areas = [("tinh", "Tỉnh", "province", None)]
    items = []  # (item id, area id, local hour, minutes)
    item_id = 0
    for d in range(districts):
        did = f"h{d:02d}"
        areas.append((did, f"Huyện {d}", "district", "tinh"))
        for hour in (6, 11, 17):
            item_id += 1
            items.append((item_id, did, hour, 30))
        for c in range(communes):
            cid = f"{did}/x{c:02d}"
            areas.append((cid, f"Xã {d}-{c}", "commune", did))
            for hour in (7, 18):
                item_id += 1
                items.append((item_id, cid, hour, 20))
    cur.executemany("INSERT INTO areas (id, name, level, parent_id, require_distinct_approver) VALUES (?,?,?,?,0)",
                    areas)
    cur.executemany("INSERT INTO users (username, password_hash, role, area_id, created_ms, failed_logins, active)"
                    " VALUES (?,?,?,?,0,0,1)",
                    [("admin", auth.hash_password("pw"), "admin", None),
                     ("manager", auth.hash_password("pw"), "manager", watched_district(districts)),
                     ("operator", auth.hash_password("pw"), "operator", watched_commune(districts, communes))])
    cur.executemany("INSERT INTO programme_items (id, kind, title, area_id, duration_ms, priority, at_s, mode,"
                    " weekdays, repeat_count, repeat_gap_s, sort_order, status, created_ms) VALUES"
                    " (?, 'audio', ?, ?, ?, 'normal', ?, 'daily', 0, 1, 0, 0, 'approved', 0)",
                    [(i, f"Bản tin {i}", a, m * 60_000, h * 3600) for i, a, h, m in items])
    receivers = []
    for d in range(districts):
        for c in range(communes):
            cid = f"h{d:02d}/x{c:02d}"
            for r in range(per_commune):
                receivers.append((f"{cid.replace('/', '-')}-{r:02d}", cid))
    rows = []
    offline = set()
    for i, (rx, area) in enumerate(receivers):
        is_off = rnd.random() < 0.1
        if is_off:
            offline.add(rx)
        hb = {"v": 1, "rx": rx, "ts": now, "uptime_s": 86400.0, "playing": None, "cache_files": 12,
              "disk_free_bytes": 3_000_000_000, "clock_offset_ms": round(rnd.gauss(0, 20), 1),
              "temperature_c": round(rnd.uniform(30, 60), 1), "network": {"rssi_dbm": rnd.randint(-110, -60)},
              "volume": rnd.choice((60, 70, 80, 90)), "version": rnd.choice(("1.2.0", "1.2.1", "1.3.0"))}
        rows.append((rx, area, f"Cụm {rx}", 16.4 + (i % 100) * 0.004, 107.3 + (i // 100) * 0.004,
                     uuid.uuid4().hex + uuid.uuid4().hex[:32], 0 if is_off else 1,
                     now - (rnd.randint(2, 5) * DAY if is_off else rnd.randint(0, 30_000)), json.dumps(hb)))
    cur.executemany("INSERT INTO receivers (id, area_id, name, lat, lon, token_hash, online, last_seen_ms,"
                    " last_hb, created_ms) VALUES (?,?,?,?,?,?,?,?,?,0)", rows)
    counts["receivers"] = len(rows)
    raw.commit()

    # Heartbeat history: one row per receiver per 15 minutes for `days` days (gaps while offline).
    first_bucket = (now - days * DAY) - (now - days * DAY) % BUCKET_MS
    buckets = list(range(first_bucket, now, BUCKET_MS))
    n = 0
    sql = ("INSERT INTO heartbeat_history (rx_id, bucket_ms, beats, offset_n, offset_sum, offset_min, offset_max,"
           " temp_n, temp_sum, temp_min, temp_max, signal_n, signal_sum, signal_min, signal_max, disk_free_min,"
           " playing_beats) VALUES (?,?,30,30,?,?,?,30,?,?,?,30,?,?,?,3000000000,0)")
    for rx, _area in receivers:
        stop = now - 3 * DAY if rx in offline else now
        off, temp, sig = rnd.gauss(0, 20), rnd.uniform(30, 55), rnd.uniform(-100, -65)
        batch = [(rx, b, off * 30, off - 5, off + 5, temp * 30, temp - 1, temp + 1, sig * 30, sig - 3, sig + 3)
                 for b in buckets if b < stop]
        cur.executemany(sql, batch)
        n += len(batch)
    counts["heartbeat_rows"] = n
    # What telemetry keeps alongside as beats arrive: receivers working per area per bucket.
    cur.execute("INSERT INTO area_activity (area_id, bucket_ms, working) SELECT r.area_id, h.bucket_ms, count(*)"
                " FROM heartbeat_history h JOIN receivers r ON r.id = h.rx_id GROUP BY r.area_id, h.bucket_ms")
    counts["area_activity_rows"] = cur.rowcount
    raw.commit()

    # Playback: each receiver plays its commune's 2 items and its district's 3 items every day.
    by_commune: dict[str, list[tuple[int, str, int, int]]] = {}
    for it in items:
        by_commune.setdefault(it[1], []).append(it)
    ev_sql = "INSERT INTO events (id, rx_id, ts_ms, type, item_id, programme_item_id, body, received_ms) " \
             "VALUES (?,?,?,?,?,?,?,?)"
    missed_sql = "INSERT INTO missed_plays (occurrence_id, programme_item_id, rx_id, planned_start_ms, detected_ms)" \
                 " VALUES (?,?,?,?,?)"
    today = datetime.now(TZ).date()
    n_ev = n_missed = 0
    for rx, area in receivers:
        district = area.split("/")[0]
        mine = by_commune[area] + by_commune[district]
        evs, missed = [], []
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            for iid, owner, hour, minutes in mine:
                start = int(datetime(day.year, day.month, day.day, hour, tzinfo=TZ).timestamp() * 1000)
                occ = f"pi-{iid}.{day:%Y%m%d}.0.{owner}"
                planned = minutes * 60_000
                roll = rnd.random()
                if rx in offline and start > now - 3 * DAY or roll < 0.04:
                    missed.append((occ, iid, rx, start, start + planned + 120_000))
                    continue
                if roll < 0.06:
                    body = {"v": 1, "id": str(uuid.uuid4()), "rx": rx, "ts": start, "type": "playback.failed",
                            "item_id": occ, "planned_start_ms": start, "code": "media.not_cached"}
                    evs.append((body["id"], rx, start, body["type"], occ, iid, json.dumps(body), start))
                    continue
                played = planned if roll > 0.09 else int(planned * rnd.uniform(0.2, 0.9))
                for kind, ts, extra in (("playback.started", start + 200, {"actual_start_ms": start + 200}),
                                        ("playback.finished", start + played,
                                         {"played_ms": played, "planned_duration_ms": planned,
                                          "end_reason": "media_end" if played == planned else "preempted"})):
                    body = {"v": 1, "id": str(uuid.uuid4()), "rx": rx, "ts": ts, "type": kind, "item_id": occ,
                            "planned_start_ms": start, **extra}
                    evs.append((body["id"], rx, ts, kind, occ, iid, json.dumps(body), ts))
        cur.executemany(ev_sql, evs)
        cur.executemany(missed_sql, missed)
        n_ev += len(evs)
        n_missed += len(missed)
    counts["events"], counts["missed_plays"] = n_ev, n_missed

    # Faults: a week of raised/cleared ones, and open ones on 3 % of the receivers.
    faults = []
    codes = ("amplifier_fault", "mains_power_lost", "speaker_line_open", "clock_unsynchronised")
    for rx, _area in receivers:
        if rnd.random() < 0.2:
            raised = now - rnd.randint(1, days) * DAY
            faults.append((rx, rnd.choice(codes), raised, raised + rnd.randint(600_000, DAY)))
        if rnd.random() < 0.03:
            faults.append((rx, rnd.choice(codes), now - rnd.randint(60_000, 2 * DAY), None))
    cur.executemany("INSERT INTO faults (rx_id, code, detail, raised_ms, cleared_ms) VALUES (?,?,'',?,?)", faults)
    counts["faults"] = len(faults)
    raw.commit()
    cur.execute("ANALYZE")
    raw.close()
    return counts


def timed(client, path: str, runs: int, headers: dict) -> tuple[float, float, int]:
    """p50 and p95 in ms of ``runs`` GETs (after one warm-up) and the size of the last answer."""
    resp = client.get(path, headers=headers)
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        resp = client.get(path, headers=headers)
        _ = resp.data
        times.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == 200, path
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, len(resp.data)


def main() -> None:
    """Seed, then measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--districts", type=int, default=10)
    parser.add_argument("--communes", type=int, default=40)
    parser.add_argument("--receivers-per-commune", type=int, default=25)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"VAR_DIR": str(Path(tmp) / "var"), "WTF_CSRF_ENABLED": False, "START_SERVICES": False,
                          "SECRET_KEY": "bench"})
        db.upgrade(app.config["DATABASE_URL"])
        t = time.perf_counter()
        print('seeding…', flush=True)
        counts = seed(app, args.districts, args.communes, args.receivers_per_commune, args.days)
        size = Path(app.config["DATABASE_URL"].removeprefix("sqlite:///")).stat().st_size
        print(f"seeded in {time.perf_counter() - t:.0f} s: " + ", ".join(f"{v:,} {k}" for k, v in counts.items())
              + f"; database {size / 1e6:.0f} MB")
        engine = app.extensions["loaxa.engine"]
        from controller.db import session_scope
        from controller.services import reports

        with session_scope(app) as session:
            t = time.perf_counter()
            reports.refresh(session)  # what report requests do incrementally, here for the whole week at once
            print(f"as-run records folded from a week of events in {time.perf_counter() - t:.1f} s (once)")
            t = time.perf_counter()
            reports.refresh(session)
            print(f"as-run refresh with nothing new: {1000 * (time.perf_counter() - t):.0f} ms")
        with engine.connect() as conn:
            t = time.perf_counter()
            conn.execute(text("SELECT count(*) FROM heartbeat_history")).scalar()
            print(f"baseline: SELECT count(*) over the heartbeat history {1000 * (time.perf_counter() - t):.0f} ms")
        today = datetime.now(TZ).date()
        month = f"from={today - timedelta(days=29):%Y-%m-%d}&to={today:%Y-%m-%d}"
        rx = watched_commune(args.districts, args.communes).replace("/", "-") + "-00"
        district = watched_district(args.districts)
        cases = [
            ("admin", "overview (/), web.py", "/", max(3, args.runs // 4)),
            ("admin", "clusters page: all 10,000, map plot, page 1", "/clusters", args.runs),
            ("admin", "clusters: offline, page 3", "/clusters?status=offline&page=3", args.runs),
            ("admin", "clusters: one district, faulty, by name", f"/clusters?area={district}&status=fault", args.runs),
            ("admin", "clusters: all, sorted by clock offset, page 5", "/clusters?sort=offset&dir=desc&page=5",
             args.runs),
            ("admin", "API clusters: status=offline page 2", "/api/v1/clusters?status=offline&page=2", args.runs),
            ("admin", "receiver detail, 24 h", f"/clusters/{rx}", args.runs),
            ("admin", "receiver detail, 7 days", f"/clusters/{rx}?range=7d", args.runs),
            ("admin", "faults page (7-day working share)", "/faults", args.runs),
            ("manager", "faults page, district manager", "/faults", args.runs),
            ("admin", "as-run report, month, all 10,000", f"/reports?{month}", max(3, args.runs // 4)),
            ("manager", "as-run report, month, one district", f"/reports?{month}", max(3, args.runs // 4)),
            ("operator", "as-run report, month, one commune", f"/reports?{month}", max(3, args.runs // 4)),
            ("manager", "as-run CSV, month, one district", f"/reports/as-run.csv?{month}", 3),
        ]
        clients = {}
        print(f"{'what':52} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>10}")
        for user, label, path, runs in cases:
            if user not in clients:
                c = app.test_client()
                resp = c.post("/login", data={"username": user, "password": "pw"})
                assert resp.status_code == 302, resp.text[:300]
                clients[user] = c
            client = clients[user]
            headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()} \
                if path.startswith("/api/") else {}
            p50, p95, size = timed(client, path, runs, headers)
            print(f"{label:52} {p50:8.0f} {p95:8.0f} {size:10,}")
        app.extensions["loaxa.engine"].dispose()


if __name__ == "__main__":
    main()
