"""The Ray executor: shards spread over Ray actors, each holding the run's plugins once.

The driver fits every plugin first (the cache then holds each fitted state once), so an actor only
loads: one :class:`ShardWorker` per worker slot builds the same plugin host, plan and runner as the
driver from the run's configuration and reads fitted states from the shared cache (``--cache-dir``
on a path every node sees). Shards go to actors as Ray tasks on actor methods; results travel
through the object store and are merged by the driver in shard order, so ``results.json`` equals
the local executor's bit for bit. A killed run resumes from the cache like a local one.

Ray is an optional extra (``uv sync --extra ray``); the import is deferred to this module.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import asdict
from typing import Any, Callable, Iterator

from ..config import ConfigError, RunConfig
from .plan import Plan
from .stages import ShardResult, ShardRunner


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: install the extra with `uv sync --extra ray` "
                          "(or `pip install 'ray>=2.9'`), or use --executor local") from None
    return ray


class ShardWorker:
    """Actor body: rebuilds the driver's runner from the configuration, then runs shards."""

    def __init__(self, cfg: dict[str, Any], informed_refs: dict[str, dict[str, tuple[str, str]]], threads: int):
        import torch

        from .run import Run

        torch.set_num_threads(threads)  # the driver's thread count: same kernels, same bits
        run = Run(RunConfig(**cfg))
        host = run.setup()
        run.load_plugins(host, fit=False)
        from .informed import InformedTier

        informed = InformedTier()
        for cond, refs in informed_refs.items():
            for label, (spec, train_fp) in refs.items():
                plugin, key = host.get("classifier", spec, train_fp=train_fp, fit=False)
                informed.classifiers.setdefault(cond, {})[label] = plugin
                informed.keys.setdefault(cond, {})[label] = key
        from .plan import make_shards
        from ..data import DiskFaceSet

        run.shards = make_shards(run.splits.eval, run.shard_size(), run.data_fp, run.image_size)
        self.plan = run.make_plan(informed)
        eval_set = DiskFaceSet(run.splits.eval, run.image_size, host.device)
        self.runner = ShardRunner(self.plan, transforms={k: p for k, (p, _) in run.transforms.items()},
                                  evaluators={k: p for k, (p, _) in run.evaluators.items()}, informed=informed.classifiers,
                                  cache=run.cache, device=host.device, load_originals=eval_set.load_uint8, seed=run.cfg.seed,
                                  timeout=host.timeout, n_samples=run.cfg.samples)

    def run(self, shard_index: int, skip: set[str]) -> ShardResult:
        return self.runner.run(self.plan.shards[shard_index], skip)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.ray = _ray()
        workers = getattr(cfg, "ray_workers", None)
        address = getattr(cfg, "ray_address", None)
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = workers
            self.ray.init(**kwargs)
        self.workers = workers or max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def map_shards(self, plan: Plan, runner: ShardRunner, skip: Callable[[], set[str]], *,
                   informed_refs: dict[str, dict[str, tuple[str, str]]] | None = None) -> Iterator[ShardResult]:
        import torch

        ray = self.ray
        wants_gpu = runner.device.type == "cuda"
        actor_cls = ray.remote(num_cpus=1, num_gpus=1 if wants_gpu else 0)(ShardWorker)
        cfg = {**asdict(self.cfg), "executor": "local", "quiet": True}
        actors = [actor_cls.remote(cfg, informed_refs or {}, torch.get_num_threads()) for _ in range(self.workers)]
        pending: deque = deque()
        next_shard = 0
        window = 2 * len(actors)  # bounded in-flight shards: memory stays a few shards' worth
        try:
            while next_shard < len(plan.shards) or pending:
                while next_shard < len(plan.shards) and len(pending) < window:
                    actor = actors[next_shard % len(actors)]
                    pending.append(actor.run.remote(next_shard, skip()))
                    next_shard += 1
                yield ray.get(pending.popleft())  # in shard order
        finally:
            for actor in actors:
                ray.kill(actor)
