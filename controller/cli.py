"""``loaxa-controller``: run the controller, prepare the database, users, demo, keys, receivers."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click

from controller.config import ConfigError, redacted

logger = logging.getLogger("controller.cli")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("amqtt", "transitions", "apscheduler.executors", "waitress.queue", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _app(**overrides):
    from controller import create_app, db

    try:
        app = create_app(overrides or None)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(1)
    db.upgrade(app.config["DATABASE_URL"])
    return app


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """loaxa controller."""
    _setup_logging(verbose)


@main.command()
@click.option("--host", default=None, help="Listen address (LOAXA_HTTP_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (LOAXA_HTTP_PORT, default 8080).")
@click.option("--demo", is_flag=True, help="Seed the demo district and run its six receivers (a `loaxa-receiver sim`).")
def run(host: str | None, port: int | None, demo: bool) -> None:
    """Serve the web UI and API, with the broker link, telemetry and scheduler."""
    from waitress import create_server

    overrides = {k: v for k, v in (("HTTP_HOST", host), ("HTTP_PORT", port)) if v is not None}
    app = _app(**overrides)
    svc = app.extensions["loaxa.services"]
    simulator = None
    server = create_server(app, host=app.config["HTTP_HOST"], port=int(app.config["HTTP_PORT"]),
                           threads=48)  # live views of alerts hold a thread each (server-sent events)
    svc.start()
    try:
        if demo:
            simulator = _start_demo(app, svc)
        broker = redacted({"MQTT_URL": svc.mqtt_url})["MQTT_URL"]  # never the broker password
        click.echo(f"\n  loaxa controller: {app.config['PUBLIC_URL']}/   (broker {broker})\n", err=True)
        live = (f"Icecast {svc.live.listen_base}" if svc.live.available
                else f"UNAVAILABLE: {svc.live.reason_unavailable}")
        click.echo(f"  Live voice (nói trực tiếp): {live}\n", err=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        server.run()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.close()
        if simulator is not None:
            from controller.demo import stop_receivers  # `demo` here is the --demo flag

            stop_receivers(simulator)
        svc.stop()


def _start_demo(app, svc):
    from controller import demo

    seeded = demo.seed(app)
    svc.dispatcher.publish_everything()
    var = Path(app.config["VAR_DIR"])
    paths = demo.receiver_configs(app, svc.mqtt_url, seeded["tokens"], var / "demo-receivers")
    level = "debug" if logging.getLogger().isEnabledFor(logging.DEBUG) else "info"
    simulator = demo.start_receivers(var / "demo-receivers", log_level=level)
    if seeded["admin_password"]:
        (var / "demo-admin.txt").write_text(f"admin {seeded['admin_password']}\n")
        (var / "demo-admin.txt").chmod(0o600)
    login = (var / "demo-admin.txt").read_text().split() if (var / "demo-admin.txt").exists() else ["admin", "?"]
    click.echo(f"\n  Demo: 1 province, 1 district, 2 communes, {len(paths)} simulated receivers "
               f"(file sink under {var / 'demo-receivers'}).\n"
               f"  Log in as: {login[0]} / {login[1]}\n", err=True)
    return simulator


@main.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (Alembic)."""
    app = _app()
    click.echo(f"database ready: {app.config['DATABASE_URL'].split('@')[-1]}")


@main.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice(["viewer", "operator", "approver", "manager", "admin"]), default="operator")
@click.option("--area", default=None, help="Area subtree the user is limited to (empty: everything).")
@click.password_option()
def create_user(username: str, role: str, area: str | None, password: str) -> None:
    """Add a user (the password is asked twice)."""
    from sqlalchemy import select

    from controller import auth
    from controller.db import session_scope
    from controller.models import Area, User
    from schedules.events import now_ms

    app = _app()
    if len(password) < 8:
        raise click.UsageError("the password needs at least 8 characters")
    with session_scope(app) as db:
        if area and db.get(Area, area) is None:
            raise click.UsageError(f"no area {area!r}")
        if db.scalars(select(User).where(User.username == username)).first():
            raise click.UsageError(f"user {username!r} exists")
        db.add(User(username=username, password_hash=auth.hash_password(password), role=role, area_id=area,
                    created_ms=now_ms()))
    click.echo(f"user {username} ({role}, area {area or 'all'}) created")


@main.command()
@click.argument("username")
def unlock(username: str) -> None:
    """Forget the failed logins counted against USERNAME, from every address (it may log in at once)."""
    from sqlalchemy import select

    from controller import auth
    from controller.db import session_scope
    from controller.models import User
    from controller.services.programme import audit

    app = _app()
    with session_scope(app) as db:
        user = db.scalars(select(User).where(User.username == username)).first()
        if user is None:
            raise click.UsageError(f"no user {username!r}")
        cleared = auth.clear_throttle(db, username)
        user.failed_logins, user.locked_until_ms = 0, None  # the columns of the old lock-out
        audit(db, None, "unlock_user", "user", user.id, {"cleared": cleared, "by": "cli"})
    click.echo(f"user {username}: {cleared} throttled address(es) cleared")


@main.command("create-token")
@click.argument("username")
@click.argument("name")
def create_token(username: str, name: str) -> None:
    """Make an API token for USERNAME (printed once; only its hash is kept)."""
    from sqlalchemy import select

    from controller import auth
    from controller.db import session_scope
    from controller.models import ApiToken, User
    from schedules.events import now_ms

    app = _app()
    token = auth.new_token()
    with session_scope(app) as db:
        user = db.scalars(select(User).where(User.username == username)).first()
        if user is None:
            raise click.UsageError(f"no user {username!r}")
        db.add(ApiToken(user_id=user.id, name=name[:100], token_hash=auth.token_hash(token), created_ms=now_ms()))
    click.echo(token)


@main.command()
@click.option("--admin-password", default=None, help="Password for the demo admin (default: random).")
def demo(admin_password: str | None) -> None:
    """Seed the demo district (areas, receivers, admin, bulletin) without running anything."""
    from controller import demo as demo_mod

    app = _app()
    seeded = demo_mod.seed(app, admin_password)
    if seeded["admin_password"]:
        click.echo(f"admin password: {seeded['admin_password']}")
    click.echo(f"demo ready: {len(seeded['tokens'])} receivers")


@main.command()
def keys() -> None:
    """Print the controller's public signing key (creating the key pair on first use)."""
    from controller import keys as keys_mod

    app = _app()
    click.echo(keys_mod.public_text(app.extensions["loaxa.services"].key))


@main.command()
@click.argument("rx_id")
@click.option("--area", required=True, help="Area the receiver belongs to.")
@click.option("--name", default=None)
@click.option("--mqtt-url", required=True, help="Broker URL the receiver connects to.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the receiver's TOML config (default: <bundle>/receiver.toml).")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a provisioning bundle here for deploy/install-receiver.sh: config, MQTT credentials, "
                   "CA, the controller's public key.")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="CA certificate of the broker's TLS (copied into the bundle).")
@click.option("--state-dir", default="/var/lib/loaxa-receiver")
@click.option("--sink", type=click.Choice(["alsa", "file", "null"]), default="alsa",
              help="alsa: the box's sound card (default); file or null: for tests and simulators.")
def provision(rx_id: str, area: str, name: str | None, mqtt_url: str, out: Path | None, bundle: Path | None,
              ca_file: Path | None, state_dir: str, sink: str) -> None:
    """Register a receiver (or re-issue its token) and write its config file or provisioning bundle."""
    from controller import keys as keys_mod
    from controller.db import session_scope
    from controller.models import Area, Receiver
    from controller.services.provisioning import (
        PASSWD_LINE,
        RX_ID,
        issue_credentials,
        write_bundle,
        write_receiver_config,
    )
    from schedules.events import now_ms

    if out is None and bundle is None:
        raise click.UsageError("give --out or --bundle")
    if not RX_ID.match(rx_id):
        raise click.UsageError("the receiver id is 2-63 lower-case letters, digits or dashes")
    app = _app()
    with session_scope(app) as db:
        if db.get(Area, area) is None:
            raise click.UsageError(f"no area {area!r}")
        rx = db.get(Receiver, rx_id)
        if rx is None:
            rx = Receiver(id=rx_id, area_id=area, name=name or rx_id, token_hash="-" + rx_id, created_ms=now_ms())
            db.add(rx)
        rx.area_id, rx.retired_ms = area, None
        token, password = issue_credentials(app, db, rx)
    public = keys_mod.public_text(app.extensions["loaxa.services"].key)
    common = {"rx_id": rx_id, "mqtt_url": mqtt_url, "public_key": public, "media_base_url": app.config["PUBLIC_URL"],
              "token": token, "state_dir": state_dir, "sink": sink}
    if bundle is not None:
        written = write_bundle(bundle, mqtt_password=password, ca_file=ca_file, **common)
        click.echo(f"receiver {rx_id} provisioned; bundle written to {bundle} ({', '.join(sorted(written))})")
        if app.config.get("MQTT_PASSWORD_FILE"):
            click.echo(f"its broker login is in {app.config['MQTT_PASSWORD_FILE']}")
        else:
            click.echo(f"add its broker login (hashed) with: cat {bundle / PASSWD_LINE} >> <passwd file>, "
                       "then reload the broker")
        if out is None:
            return
    assert out is not None
    write_receiver_config(out, **common)
    click.echo(f"receiver {rx_id} provisioned; config written to {out}")
