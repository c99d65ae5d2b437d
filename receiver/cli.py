"""Command line of the receiver: ``loaxa-receiver run`` and ``loaxa-receiver sim``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from receiver.config import ConfigError, ReceiverConfig, load_config

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@click.group()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    envvar="LOAXA_LOG_LEVEL",
    help="Lowest level written to stderr.",
)
def main(log_level: str) -> None:
    """loaxa receiver agent: plays signed manifests on schedule and reports back."""
    _setup_logging(log_level)


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    envvar="LOAXA_RECEIVER_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Receiver TOML file (or LOAXA_RECEIVER_CONFIG).",
)
def run(config_path: Path) -> None:
    """Run one receiver until SIGTERM or SIGINT."""
    from receiver.agent import Agent

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    try:
        agent = Agent(config)
    except (OSError, ValueError) as exc:
        click.echo(f"receiver {config.rx_id}: cannot start: {exc}", err=True)
        sys.exit(1)
    agent.run_forever()


@main.command()
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory whose *.toml files each configure one full receiver agent (threads, audio).",
)
@click.option("--count", type=click.IntRange(1, 100_000), help="Simulate this many receivers in one thread.")
@click.option("--mqtt-url", envvar="LOAXA_MQTT_URL", help="Broker for --count (mqtt[s]://[user:pass@]host:port).")
@click.option("--public-key", envvar="LOAXA_PUBLIC_KEY", help="Controller public key for --count (base64).")
@click.option("--scope", "scopes", multiple=True, help="Scope every simulated receiver follows before its conf.")
@click.option("--prefix", default="sim-", show_default=True, help="Receiver ids are <prefix><number>.")
@click.option("--parent-pid", type=int, default=None,
              help="Stop (as on SIGTERM) once this process is gone: the controller's demo starts the sim so.")
def sim(
    config_dir: Path | None,
    count: int | None,
    mqtt_url: str | None,
    public_key: str | None,
    scopes: tuple[str, ...],
    prefix: str,
    parent_pid: int | None,
) -> None:
    """Run many receivers in this process: full agents from --config-dir, or --count light ones."""
    if (config_dir is None) == (count is None):
        raise click.UsageError("give either --config-dir or --count")
    if parent_pid is not None:
        _stop_with_parent(parent_pid)
    if count is not None:
        _sim_count(count, mqtt_url, public_key, list(scopes), prefix)
        return
    assert config_dir is not None
    from receiver.sim import Simulator

    configs: list[ReceiverConfig] = []
    errors: list[str] = []
    for path in sorted(config_dir.glob("*.toml")):
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        click.echo("\n".join(errors), err=True)
        sys.exit(1)
    if not configs:
        click.echo(f"no *.toml receiver configurations in {config_dir}", err=True)
        sys.exit(1)
    try:
        simulator = Simulator(configs)
    except ValueError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    logger.info("simulating %d receiver(s) from %s", len(configs), config_dir)
    simulator.run_forever()


def _stop_with_parent(parent_pid: int) -> None:
    """Send ourselves SIGTERM once ``parent_pid`` is no longer our parent (it exited or was killed).

    A controller killed with -9 runs no clean-up: without this its demo receivers would play on.
    """
    if os.getppid() != parent_pid:
        logger.warning("parent %d is already gone; stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        logger.warning("parent %d is gone; stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _sim_count(count: int, mqtt_url: str | None, public_key: str | None, scopes: list[str], prefix: str) -> None:
    import resource
    import threading

    from receiver.config import parse_mqtt_url
    from receiver.swarm import Swarm
    from receiver.systemd import run_until_signal
    from schedules.signing import public_key_from_text

    problems = []
    if not mqtt_url:
        problems.append("--mqtt-url (or LOAXA_MQTT_URL) is required with --count")
    if not public_key:
        problems.append("--public-key (or LOAXA_PUBLIC_KEY) is required with --count")
    broker = None
    if mqtt_url:
        try:
            broker = parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            problems.append(f"--mqtt-url: {exc}")
    if public_key:
        try:
            public_key_from_text(public_key)
        except ValueError:
            problems.append("--public-key: not a base64 Ed25519 public key")
    if problems:
        click.echo("\n".join(problems), err=True)
        sys.exit(1)
    assert broker is not None and public_key is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, hard))
    swarm = Swarm(count, broker.host, broker.port, public_key, prefix=prefix, scopes=scopes, tls=broker.tls,
                  username=broker.username, password=broker.password)
    done = threading.Event()

    def report() -> None:
        announced = False
        while not done.wait(1.0):
            n = swarm.connected()
            if n == count and not announced:
                announced = True
                logger.info("simulator: %d/%d connected", n, count)

    reporter = threading.Thread(target=report, name="sim-report", daemon=True)

    def start() -> None:
        swarm.start()
        reporter.start()

    def stop() -> None:
        done.set()
        swarm.stop()

    run_until_signal(start, stop)
