"""Many receivers in one process, for the demo and for tests.

This one runs one full :class:`receiver.agent.Agent` (with its own threads,
ffmpeg and sink) per configuration, which is right for a handful of receivers
such as the controller's six-receiver demo (``sim --config-dir``). For
thousands, :mod:`receiver.swarm` drives light simulated receivers from one
thread through a selector (``sim --count N``; DESIGN.md, "Many receivers in
one process").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from receiver.sinks import Sink
from receiver.systemd import run_until_signal

logger = logging.getLogger(__name__)


class Simulator:
    """Run several receiver agents side by side in this process."""

    def __init__(
        self,
        configs: list[ReceiverConfig],
        sink_factory: Callable[[ReceiverConfig], Sink] | None = None,
    ) -> None:
        seen_ids: set[str] = set()
        seen_dirs: set[str] = set()
        for config in configs:
            if config.rx_id in seen_ids:
                raise ValueError(f"receiver {config.rx_id!r} appears twice")
            if config.state_dir in seen_dirs:
                raise ValueError(f"state_dir {config.state_dir} is shared by two receivers")
            seen_ids.add(config.rx_id)
            seen_dirs.add(config.state_dir)
        self.configs = list(configs)
        self.sink_factory = sink_factory
        self.agents: list[Agent] = []
        self._running = False

    def agent(self, rx_id: str) -> Agent:
        """The running agent of one receiver; KeyError if there is none."""
        for agent in self.agents:
            if agent.rx == rx_id:
                return agent
        raise KeyError(rx_id)

    def start(self) -> None:
        """Build and start every agent (each connects in the background)."""
        if self._running:
            return
        self._running = True
        try:
            for config in self.configs:
                sink = self.sink_factory(config) if self.sink_factory is not None else None
                agent = Agent(config, sink=sink)
                self.agents.append(agent)
                agent.start()
        except BaseException:
            self.stop()
            raise
        logger.info("simulator: %d receiver(s) started", len(self.agents))

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until every agent is connected; returns False if one is not within ``timeout``."""
        return all(agent.wait_connected(timeout) for agent in self.agents)

    def stop(self) -> None:
        """Stop every agent (in parallel, so the shutdown takes as long as the slowest)."""
        agents, self.agents = self.agents, []
        self._running = False
        threads = [threading.Thread(target=a.stop, name=f"stop-{a.rx}") for a in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if agents:
            logger.info("simulator: %d receiver(s) stopped", len(agents))

    def run_forever(self) -> None:
        """Start, block until SIGTERM or SIGINT, then stop."""
        run_until_signal(self.start, self.stop)
