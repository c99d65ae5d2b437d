"""Command line of the receiver: ``loaxa-receiver run`` and ``loaxa-receiver sim``."""

from __future__ import annotations

import logging
import sys
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
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory whose *.toml files each configure one receiver.",
)
def sim(config_dir: Path) -> None:
    """Run every receiver configured in a directory, in this one process."""
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
