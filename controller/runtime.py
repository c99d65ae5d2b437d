"""The controller's long-lived parts and their start/stop order.

``init_app`` builds what needs no network (signing key, catalogue,
dispatcher); ``start`` brings up the broker link, telemetry and the
scheduler. Tests and CLI commands that only touch the database skip ``start``.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, current_app

from controller import keys
from controller.broker import EmbeddedBroker
from controller.mqtt import ControllerLink
from controller.services.catalogue import Catalogue
from controller.services.dispatch import Dispatcher
from controller.services.telemetry import SUBSCRIPTIONS, Telemetry

logger = logging.getLogger(__name__)


class Services:
    """Everything the controller runs besides the web server."""

    def __init__(self, app: Flask):
        self.app = app
        self.key = keys.load_or_create(app.config["SIGNING_KEY_FILE"])
        self.catalogue = Catalogue(app)
        self.dispatcher = Dispatcher(app, self.key, self._publish)
        self.telemetry = Telemetry(app)
        self.broker: EmbeddedBroker | None = None
        self.link: ControllerLink | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.mqtt_url: str | None = app.config.get("MQTT_URL")

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
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
        self.link = ControllerLink(self.mqtt_url, self.app.config["MQTT_CLIENT_ID"], SUBSCRIPTIONS,
                                   self.telemetry.on_message, on_connect=self._on_connect)
        self.link.start()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(refresh_manifests, "interval", args=[self.app],
                               seconds=int(self.app.config["MANIFEST_REFRESH_S"]),
                               id="refresh-manifests", max_instances=1, coalesce=True)
        self.scheduler.start()

    def _on_connect(self) -> None:
        if self.broker is not None:
            # A fresh embedded broker holds no retained messages: send the latest versions again.
            self.dispatcher.republish_latest()
        self.dispatcher.publish_everything()

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self.link is not None:
            self.link.stop()
            self.link = None
        self.telemetry.stop()
        self.catalogue.shutdown()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def refresh_manifests(app: Flask) -> None:
    """Scheduler job: roll the 48-hour window and publish whatever changed."""
    svc: Services = app.extensions["loaxa.services"]
    sent = svc.dispatcher.publish_everything()
    logger.info("manifest refresh: %d message(s) published", sent)


def init_app(app: Flask) -> None:
    """Attach the services (not started) to the app."""
    app.extensions["loaxa.services"] = Services(app)


def services() -> Services | None:
    """The services of the current app."""
    return current_app.extensions.get("loaxa.services")
