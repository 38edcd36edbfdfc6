"""Executors: who runs the shards. One interface, ``map_shards(plan, runner, skip, ...) -> iterator``.

``local`` (the default) streams shards in order in this process, so memory holds one shard's
images at a time. ``ray`` (see :mod:`.ray_executor`) spreads shards over Ray actors; results come
back in shard order, so the driver merges exactly what the local executor would. ``skip`` is read
before each shard (conditions that failed are not computed again); ``timings`` holds the executor's
own overheads (e.g. starting workers), added to the run's timings.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

from ..config import ConfigError, RunConfig
from .plan import Plan
from .stages import ShardResult, ShardRunner

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    timings: dict[str, float]

    def map_shards(self, plan: Plan, runner: ShardRunner, skip: Callable[[], set[str]], *,
                   informed_refs: dict[str, dict[str, tuple[str, str]]] | None = None,
                   host: Any = None) -> Iterator[ShardResult]: ...


class LocalExecutor:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def map_shards(self, plan: Plan, runner: ShardRunner, skip: Callable[[], set[str]], *,
                   informed_refs: dict[str, dict[str, tuple[str, str]]] | None = None,
                   host: Any = None) -> Iterator[ShardResult]:
        for shard in plan.shards:
            yield runner.run(shard, skip())


def executor_for(cfg: RunConfig, log: Callable[[str], None] | None = None) -> Executor:
    """The executor ``cfg.executor`` names; ``log`` receives its one-line notices (e.g. workers starting)."""
    name = cfg.executor
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(cfg, log=log)
    raise ConfigError(f"--executor {name!r}: unknown executor; choose one of {', '.join(EXECUTORS)}")
