"""Executors: who runs the shards. One interface, ``map_shards(plan, runner, skip) -> iterator``.

``local`` (the default) streams shards in order in this process, so memory holds one shard's
images at a time. ``ray`` (see :mod:`.ray_executor`) spreads shards over Ray actors; results come
back in shard order, so the driver merges exactly what the local executor would.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

from ..config import RunConfig
from .plan import Plan
from .stages import ShardResult, ShardRunner


class Executor(Protocol):
    def map_shards(self, plan: Plan, runner: ShardRunner, skip: Callable[[], set[str]], *,
                   informed_refs: dict[str, dict[str, tuple[str, str]]] | None = None) -> Iterator[ShardResult]: ...


class LocalExecutor:
    def map_shards(self, plan: Plan, runner: ShardRunner, skip: Callable[[], set[str]], *,
                   informed_refs: dict[str, dict[str, tuple[str, str]]] | None = None) -> Iterator[ShardResult]:
        for shard in plan.shards:
            yield runner.run(shard, skip())


def executor_for(cfg: RunConfig) -> Executor:
    name = getattr(cfg, "executor", "local") or "local"
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(cfg)
    raise ValueError(f"unknown executor {name!r}")
