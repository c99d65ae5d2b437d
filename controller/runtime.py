"""The controller's long-lived parts and their start/stop order.

``init_app`` builds what needs no network (signing key, catalogue,
dispatcher); ``start`` brings up the broker link, telemetry and the
scheduler. Tests and CLI commands that only touch the database skip ``start``.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, current_app

from controller import keys
from controller.broker import EmbeddedBroker
from controller.mqtt import ControllerLink
from controller.services import asrun
from controller.services.catalogue import Catalogue
from controller.services.dispatch import RETAINED_SUBSCRIPTIONS, Dispatcher
from controller.services.emergencies import Emergencies
from controller.services.live import LiveVoice
from controller.services.telemetry import SUBSCRIPTIONS, Telemetry
from schedules import topics
from schedules.events import now_ms

logger = logging.getLogger(__name__)


class Services:
    """Everything the controller runs besides the web server."""

    def __init__(self, app: Flask):
        self.app = app
        self.key = keys.load_or_create(app.config["SIGNING_KEY_FILE"])
        self.catalogue = Catalogue(app)
        self.dispatcher = Dispatcher(app, self.key, self.publish)
        self.telemetry = Telemetry(app)
        self.emergencies = Emergencies(app, self.key, self.publish)
        self.telemetry.on_ingested = self.emergencies.notify  # live views wake on every cluster's answer
        self.live = LiveVoice(app)
        self.emergencies.on_end.append(self.live.end)  # an alert that ends closes its live-voice session
        self.broker: EmbeddedBroker | None = None
        self.link: ControllerLink | None = None
        self.scheduler: BackgroundScheduler | None = None
        # Jobs are stored in the database, so they name their controller by a picklable key.
        self.key_id = app.config["SIGNING_KEY_FILE"]
        self.mqtt_url: str | None = app.config.get("MQTT_URL")
        self._rebuild: threading.Timer | None = None
        self._rebuild_lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Send one message at QoS 1 on the controller's broker link (dropped, logged, when there is none)."""
        if self.link is None:
            logger.debug("no broker link; %s not sent", topic)
            return
        self.link.publish(topic, payload, qos=1, retain=retain)

    def start(self) -> None:
        """Broker (embedded when no URL), MQTT link, telemetry, scheduler, first publish."""
        if not self.mqtt_url:
            self.broker = EmbeddedBroker(workdir=None).start()
            self.mqtt_url = self.broker.url
        self.telemetry.start()
        self.live.start()  # Icecast for live voice: the configured one, else Debian's on loopback (or says why not)
        self.link = ControllerLink(self.mqtt_url, self.app.config["MQTT_CLIENT_ID"],
                                   SUBSCRIPTIONS + RETAINED_SUBSCRIPTIONS, self._on_message,
                                   on_connect=self._on_connect)
        self.link.start()
        _RUNNING[self.key_id] = self
        store = SQLAlchemyJobStore(engine=self.app.extensions["loaxa.engine"], tablename="apscheduler_jobs")
        self.scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC",
                                             job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": 300})
        # Persistent jobs (they survive a restart); replace_existing keeps one of each.
        self.scheduler.add_job(refresh_manifests, "interval", args=[self.key_id], replace_existing=True,
                               seconds=int(self.app.config["MANIFEST_REFRESH_S"]), id="refresh-manifests")
        self.scheduler.add_job(mark_missed, "interval", args=[self.key_id], replace_existing=True,
                               seconds=int(self.app.config["MISSED_CHECK_S"]), id="mark-missed")
        self.scheduler.add_job(housekeeping, "interval", args=[self.key_id], replace_existing=True,
                               seconds=300, id="housekeeping")
        # Alerts end when their sound is over (or their end time came); queued ones start then.
        self.scheduler.add_job(alerts_tick, "interval", args=[self.key_id], replace_existing=True,
                               seconds=float(self.app.config["ALERT_TICK_S"]), id="alerts-tick")
        # Receivers registered by another process (the CLI's provision) get their conf within seconds.
        self.scheduler.add_job(watch_fleet, "interval", args=[self.key_id], replace_existing=True,
                               seconds=int(self.app.config["FLEET_WATCH_S"]), id="watch-fleet")
        self.scheduler.start()

    def programme_changed(self) -> None:
        """Debounced: rebuild and publish manifests shortly after the last change.

        A timer in this process, not a one-off APScheduler job: replacing a stored date job from a web
        request while the scheduler thread ran and removed it raised JobLookupError in that thread (seen
        once in a full test run). Nothing is lost across a restart: the broker connect publishes everything.
        """
        if self.scheduler is None:
            return
        with self._rebuild_lock:
            if self._rebuild is not None:
                self._rebuild.cancel()
            self._rebuild = threading.Timer(float(self.app.config["REBUILD_DEBOUNCE_S"]), refresh_manifests,
                                            args=[self.key_id])
            self._rebuild.daemon = True
            self._rebuild.start()

    def _on_message(self, topic: str, payload: bytes) -> None:
        """From the MQTT thread: our own retained topics to the dispatcher's audit, the rest to telemetry."""
        if topic.startswith(_RETAINED_PREFIXES):
            self.dispatcher.observe_retained(topic, payload)
        else:
            self.telemetry.on_message(topic, payload)

    def _on_connect(self) -> None:
        if self.broker is not None:
            # A fresh embedded broker holds no retained messages: send the latest versions again.
            self.dispatcher.republish_latest()
        self.dispatcher.publish_everything()
        if self.scheduler is not None:
            # Once the broker has told us what it holds, put back whatever it lost.
            run_at = datetime.now(UTC) + timedelta(seconds=float(self.app.config["RETAINED_AUDIT_DELAY_S"]))
            self.scheduler.add_job(audit_retained, "date", run_date=run_at, args=[self.key_id],
                                   id="audit-retained", replace_existing=True)

    def audit_retained(self) -> int:
        """Republish what the broker lost (only while connected long enough to have heard it all)."""
        link = self.link
        if link is None or not link.connected.is_set() or link.connected_at_ms is None:
            return 0
        if now_ms() - link.connected_at_ms < float(self.app.config["RETAINED_AUDIT_DELAY_S"]) * 1000 - 50:
            return 0
        return self.dispatcher.restore_retained(since_ms=link.connected_at_ms)

    def broker_down_since(self) -> int | None:
        """When the controller lost (or has not yet reached) the broker; None while connected or not started."""
        return None if self.link is None else self.link.down_since_ms

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice."""
        with self._rebuild_lock:
            if self._rebuild is not None:
                self._rebuild.cancel()
                self._rebuild = None
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        _RUNNING.pop(self.key_id, None)
        if self.link is not None:
            self.link.stop()
            self.link = None
        self.telemetry.stop()
        self.live.stop()
        self.emergencies.shutdown()
        self.catalogue.shutdown()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


_RUNNING: dict[str, Services] = {}
_RETAINED_PREFIXES = (f"{topics.PREFIX}/sched/", f"{topics.PREFIX}/conf/")


def refresh_manifests(key_id: str) -> None:
    """Scheduler job: roll the 48-hour window and publish whatever changed."""
    svc = _RUNNING.get(key_id)
    if svc is None:
        logger.warning("refresh job for a controller that is not running here (%s)", key_id)
        return
    sent = svc.dispatcher.publish_everything()
    logger.info("manifest refresh: %d message(s) published", sent)
    svc.audit_retained()


def alerts_tick(key_id: str) -> None:
    """Scheduler job: end alerts whose time is over and start those queued behind them."""
    svc = _RUNNING.get(key_id)
    if svc is not None:
        for alert_id in svc.live.idle(float(svc.app.config["LIVE_IDLE_S"])):
            logger.warning("live voice of alert %s: no audio for a while; ending it", alert_id)
            svc.emergencies.end(alert_id, "source_lost")
        svc.emergencies.tick()


def audit_retained(key_id: str) -> None:
    """Scheduler job: after a connect, put back the retained messages the broker lost."""
    svc = _RUNNING.get(key_id)
    if svc is not None:
        svc.audit_retained()


def watch_fleet(key_id: str) -> None:
    """Scheduler job: publish the conf of receivers registered or moved outside this process."""
    svc = _RUNNING.get(key_id)
    if svc is None:
        return
    sent = svc.dispatcher.publish_new_receivers()
    if sent:
        logger.info("fleet watch: %d new receiver conf(s) published", sent)


def mark_missed(key_id: str) -> None:
    """Scheduler job: record plays that were due and never started."""
    svc = _RUNNING.get(key_id)
    if svc is None:
        return
    found = asrun.mark_missed(svc.app)
    if found:
        logger.warning("%d missed play(s) recorded", found)


def housekeeping(key_id: str) -> None:
    """Scheduler job: fold new playback events into the as-run table; drop old heartbeat history."""
    from controller.db import session_scope
    from controller.services import health, reports
    from schedules.events import now_ms

    svc = _RUNNING.get(key_id)
    if svc is None:
        return
    with session_scope(svc.app) as db:
        reports.refresh(db)
        gone = health.prune_history(db, int(svc.app.config["HEARTBEAT_HISTORY_DAYS"]), now_ms())
    if gone:
        logger.info("pruned %d heartbeat history rows", gone)


def init_app(app: Flask) -> None:
    """Attach the services (not started) to the app."""
    app.extensions["loaxa.services"] = Services(app)
    app.context_processor(_broker_banner)
    app.context_processor(_running_alerts)


def _broker_banner() -> dict:
    """Every page says so while the controller has lost the broker: no status it shows is current."""
    from controller.pages.common import local_time
    from controller.services import health

    lost = health.broker_lost_since()
    return {"broker_lost_since": local_time(lost, "%H:%M:%S %d/%m/%Y") if lost is not None else None}


def _running_alerts() -> dict:
    """Every page shows the alerts running in the user's areas, live and drill in their own colours."""
    from flask_login import current_user
    from sqlalchemy import select

    from controller.db import get_db
    from controller.models import Alert
    from controller.services import areas

    if not current_user or not current_user.is_authenticated:
        return {"running_alerts": []}
    db = get_db()
    visible = areas.subtree_ids(db, current_user.area_id)
    rows = db.scalars(select(Alert).where(Alert.status == "running").order_by(Alert.started_ms)).all()
    return {"running_alerts": [a for a in rows if a.area_id in visible]}


def services() -> Services | None:
    """The services of the current app."""
    return current_app.extensions.get("loaxa.services")
