"""The Ray executor: shards spread over Ray actors, each holding the run's plugins once.

The driver does everything but the shards: it reads and splits the data, fits every plugin (so
the cache holds each fitted state once), builds the informed tier and the plan. Then one
:class:`ShardWorker` actor per worker slot rebuilds the driver's plugins from a
:class:`WorkerSpec` (the plan and the spec travel once through the object store) and loads their
fitted states from the shared cache with ``fit=False``: each model loads once per worker. Shards
go to idle actors as tasks on actor methods (:class:`ray.util.ActorPool`), at most ``2 x workers``
in flight or waiting to be merged, and the driver merges the results in shard order: the very
merge the local executor feeds, so ``results.json`` equals the local one bit for bit.

What makes the bits equal: the same keys (a worker checks that every plugin's key equals the
driver's, so a node with another plugin version fails loudly instead of mixing results), the same
per-shard seeds (set by :class:`~.stages.ShardRunner` from the task's key), and the same thread
counts (torch's intra- and inter-op pools and every BLAS/OpenMP pool are set to the driver's;
reductions split across another number of threads round differently).

A worker that cannot load a plugin (fitted state not in its cache, model file missing on its node,
plugin file not importable there) stops the run before any shard with one error naming the worker,
the plugin and the cause. Shards a worker finished are in the cache, so a killed run resumes.

Ray is an optional extra (``uv sync --extra ray``); it is imported here only.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from ..allocator import keep_freed_memory
from ..api import FaceRecord
from ..config import ConfigError, RunConfig
from .plan import Plan
from .stages import ShardResult, ShardRunner

CACHE_COUNTERS = ("hits", "misses", "rejected", "stale_removed")
IN_FLIGHT_PER_WORKER = 2  # shards computed or waiting to be merged per worker: bounds the driver's memory


class RayWorkerError(ConfigError):
    """A Ray worker could not rebuild the driver's plugins (a user-fixable set-up problem on a node)."""


def import_ray():
    # Under `uv run`, Ray (>= 2.43) would otherwise start every worker through `uv run` with the working
    # directory uploaded: a re-sync and a copy per worker. sbpet's workers need the installed environment
    # only (the same on every node, see docs/distributed.md); set the variable to 1 to get Ray's behaviour.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: install the extra with `uv sync --extra ray` "
                          "(or `pip install 'ray>=2.9'`), or use --executor local") from None
    return ray


# --------------------------------------------------------------------------- threads


@dataclass(frozen=True)
class Threads:
    """The driver's thread pools, applied in each worker so every kernel splits its work the same way."""

    torch: int
    interop: int
    pools: tuple[tuple[str, int], ...] = ()  # (threadpoolctl prefix, threads) of each BLAS/OpenMP library

    @classmethod
    def of_this_process(cls) -> "Threads":
        import torch

        return cls(torch.get_num_threads(), torch.get_num_interop_threads(), _blas_pools())

    def env(self) -> dict[str, str]:
        """Variables for libraries that size their pools when loaded (Ray would set OMP_NUM_THREADS=1)."""
        return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(self.torch)),
                **{k: os.environ[k] for k in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ}}

    def apply(self) -> "Threads":
        """Set this process's pools to these counts; returns what they are afterwards."""
        import torch

        if self.pools:  # first: torch's own OpenMP pool is among them, and torch's count below must win
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                pass
            else:
                threadpool_limits(limits=dict(self.pools))
        torch.set_num_threads(self.torch)
        keep_freed_memory()  # as the driver does (allocator.py)
        if torch.get_num_interop_threads() != self.interop:
            try:
                torch.set_num_interop_threads(self.interop)
            except RuntimeError:  # only possible before the first inter-op work; a fresh actor has done none
                pass
        return Threads.of_this_process()


def _blas_pools() -> tuple[tuple[str, int], ...]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # a dependency of scikit-learn; without it only torch's pools are mirrored
        return ()
    return tuple(sorted({(p["prefix"], int(p["num_threads"])) for p in threadpool_info()}))


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --------------------------------------------------------------------------- what a worker needs


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the driver's plugins, keyed exactly as the driver keyed them."""

    cfg: RunConfig
    cwd: str  # relative paths in the configuration and the records mean what they mean on the driver
    cache_root: str
    device: str
    image_size: int
    split_fp: str
    train: tuple[FaceRecord, ...]
    pool: tuple[FaceRecord, ...]
    transforms: tuple[tuple[str, str, str], ...]  # (kind, spec, driver's key)
    evaluators: tuple[tuple[str, str, str], ...]
    informed: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)  # cond -> label -> (spec, train fp, key)
    threads: Threads = Threads(1, 1)

    @classmethod
    def from_driver(cls, cfg: RunConfig, host: Any, plan: Plan, runner: ShardRunner,
                    informed_refs: dict[str, dict[str, tuple[str, str]]]) -> "WorkerSpec":
        informed = {cond: {label: (spec, train_fp, plan.informed_keys[cond][label]) for label, (spec, train_fp) in refs.items()}
                    for cond, refs in informed_refs.items() if cond in runner.informed}
        return cls(cfg=cfg, cwd=os.getcwd(), cache_root=str(runner.cache.root.resolve()), device=str(runner.device),
                   image_size=host.image_size, split_fp=host.split_fp, train=tuple(host.train.records),
                   pool=tuple(host.pool.records),
                   transforms=tuple((k, s, plan.transform_keys[(k, s)]) for (k, s) in runner.transforms),
                   evaluators=tuple((k, s, plan.evaluator_keys[(k, s)]) for (k, s) in runner.evaluators),
                   informed=informed, threads=Threads.of_this_process())


# --------------------------------------------------------------------------- the actor


class ShardWorker:
    """Actor body: the driver's plugins, loaded once, and a ShardRunner over them.

    The constructor never raises: what went wrong is kept and reported by :meth:`ready`, so the
    driver can name every worker's problem in one error instead of a Ray traceback per actor.
    """

    def __init__(self, spec: WorkerSpec, plan: Plan):
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.runner: ShardRunner | None = None
        self.threads: Threads | None = None
        try:
            self._build(spec, plan)
        except Exception as exc:  # noqa: BLE001 - reported by ready(), with the worker's name
            self.problems.append(f"setting up the worker: {type(exc).__name__}: {exc}")

    def _build(self, spec: WorkerSpec, plan: Plan) -> None:
        import torch

        from ..cache import Cache
        from ..data import DiskFaceSet
        from ..plugins import load_registry
        from ..progress import Reporter
        from .host import PluginHost

        if os.path.isdir(spec.cwd):
            os.chdir(spec.cwd)
        cfg = spec.cfg
        registry = load_registry(cfg.plugins)  # imports every plugin (and its libraries) before the pools are sized
        spec.threads.apply()
        device = torch.device("cuda") if spec.device.startswith("cuda") else torch.device(spec.device)  # Ray's GPU is cuda:0 here
        warn = self._warn
        # Fitted states are read even under --refresh: the driver has just (re)written them for this run.
        fit_cache = Cache(spec.cache_root, warn=warn)
        self.cache = Cache(spec.cache_root, refresh=cfg.refresh, warn=warn)
        try:
            from ..modelstore import ModelStore

            store = ModelStore(None, registry.assets)
        except ImportError:
            store = None
        host = PluginHost(registry, cfg, fit_cache, train=DiskFaceSet(spec.train, spec.image_size, device),
                          pool=DiskFaceSet(spec.pool, spec.image_size, device), split_fp=spec.split_fp,
                          image_size=spec.image_size, device=device, reporter=Reporter(quiet=True), model_store=store)

        def load(kind: str, name: str, key: str, train_fp: str | None = None):
            try:
                plugin, got = host.get(kind, name, train_fp=train_fp, fit=False)
            except Exception as exc:  # noqa: BLE001 - any failure is this worker's set-up problem
                message = str(exc) or type(exc).__name__
                if "no fitted state" in message:
                    message += (f"; this worker reads the cache at {spec.cache_root}: it must be the driver's (a shared "
                                "--cache-dir), and the worker must import the driver's sbpet and plugins (the same "
                                "installation and PYTHONPATH), or its keys differ from the driver's")
                self.problems.append(f"{kind} {name!r}: {message}")
                return None
            if got != key:
                self.problems.append(f"{kind} {name!r} has key {got} here but {key} on the driver: its code, version, options "
                                     "or models differ between this node and the driver's")
                return None
            return plugin

        transforms = {(k, s): load(k, s, key) for k, s, key in spec.transforms}
        evaluators = {(k, s): load(k, s, key) for k, s, key in spec.evaluators}
        informed = {cond: {label: load("classifier", s, key, train_fp) for label, (s, train_fp, key) in refs.items()}
                    for cond, refs in spec.informed.items()}
        self.threads = spec.threads.apply()  # again: plugins may have loaded more libraries with pools of their own
        if self.problems:
            return
        self.runner = ShardRunner(plan, transforms=transforms, evaluators=evaluators, informed=informed, cache=self.cache,
                                  device=device, load_originals=DiskFaceSet([], spec.image_size, device).load_uint8,
                                  seed=cfg.seed, timeout=cfg.plugin_timeout, n_samples=cfg.samples)

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def ready(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "cpus": _usable_cpus(), "problems": list(self.problems),
                "threads": None if self.threads is None else (self.threads.torch, self.threads.interop, self.threads.pools)}

    def run(self, shard_index: int, skip: Sequence[str], dead: Sequence[tuple[str, str]]) -> tuple[ShardResult, dict[str, Any]]:
        """One shard; also this shard's cache counts and any new cache warnings, for the driver's totals."""
        assert self.runner is not None, "run() on a worker that reported problems"
        self.runner.dead.update(map(tuple, dead))  # plugins that timed out anywhere are not called again
        before = {c: getattr(self.cache, c) for c in CACHE_COUNTERS}
        result = self.runner.run(self.runner.plan.shards[shard_index], set(skip))
        stats = {c: getattr(self.cache, c) - before[c] for c in CACHE_COUNTERS}
        stats["warnings"], self.warnings = self.warnings, []
        return result, stats


# --------------------------------------------------------------------------- the driver's side


class RayExecutor:
    def __init__(self, cfg: RunConfig, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.log = log or (lambda message: None)
        self.timings: dict[str, float] = {}
        self.workers_info: list[dict[str, Any]] = []

    def connect(self, ray) -> bool:
        """Join ``--ray-address`` or start a local instance; True when this run started Ray (and stops it)."""
        if ray.is_initialized():  # a caller (a notebook, a test) already chose the cluster
            return False
        import logging

        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.ERROR if self.cfg.quiet else logging.WARNING}
        if self.cfg.ray_address:
            kwargs["address"] = self.cfg.ray_address
        else:
            kwargs["address"] = "local"  # never join some other cluster found on this machine by accident
            kwargs["num_cpus"] = self.cfg.ray_workers  # None: every CPU
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"--ray-address {self.cfg.ray_address}: cannot join a Ray cluster there ({exc}); start one "
                              "with `ray start --head` (see docs/distributed.md)") from None
        return True

    def resources(self, ray, wants_gpu: bool) -> tuple[int, float]:
        """Number of actors and the GPU share each asks for."""
        total = ray.cluster_resources()
        cpus, gpus = int(total.get("CPU", 0)), float(total.get("GPU", 0))
        workers = self.cfg.ray_workers or max(1, cpus)
        where = f"the Ray cluster at {self.cfg.ray_address}" if self.cfg.ray_address else "the Ray cluster"
        if workers > cpus:
            raise ConfigError(f"--ray-workers {workers}: {where} has {cpus} CPUs, and each worker takes one; "
                              f"use --ray-workers {max(cpus, 1)} or add nodes")
        if not wants_gpu:
            return workers, 0.0
        if gpus <= 0:
            raise ConfigError(f"the run's device is cuda, but {where} has no GPUs; start the nodes on GPU machines "
                              "or use --device cpu")
        return workers, min(1.0, math.floor(gpus / workers * 1e4) / 1e4)  # workers share the GPUs (fractions)

    def map_shards(self, plan: Plan, runner: ShardRunner, skip: Callable[[], set[str]], *,
                   informed_refs: dict[str, dict[str, tuple[str, str]]] | None = None,
                   host: Any = None) -> Iterator[ShardResult]:
        if host is None:
            raise ValueError("the Ray executor needs the driver's plugin host")
        ray = import_ray()
        t0 = time.perf_counter()
        started = self.connect(ray)
        self.timings["ray: connect"] = time.perf_counter() - t0
        actors: list[Any] = []
        try:
            t0 = time.perf_counter()
            workers, gpu_share = self.resources(ray, runner.device.type == "cuda")
            spec = WorkerSpec.from_driver(self.cfg, host, plan, runner, informed_refs or {})
            spec_ref, plan_ref = ray.put(spec), ray.put(plan)  # once in the object store, shared by every actor
            worker_cls = ray.remote(ShardWorker).options(
                # No restarts: a lost worker ends the run with a clear error, and the next run resumes from the cache.
                num_cpus=1, num_gpus=gpu_share, runtime_env={"env_vars": spec.threads.env()}, max_restarts=0)
            actors = [worker_cls.remote(spec_ref, plan_ref) for _ in range(workers)]
            self.log(f"ray: starting {workers} worker{'s' * (workers != 1)}"
                     + (f" ({gpu_share:g} GPU each)" if gpu_share else ""))
            try:
                self.workers_info = ray.get([a.ready.remote() for a in actors])
            except ray.exceptions.RayActorError as exc:
                raise RayWorkerError(f"--executor ray: a worker process died while loading the run's plugins ({exc}); "
                                     "a crash in native plugin code or too little memory on its node") from None
            self.check_ready(self.workers_info)
            self.timings["ray: start workers"] = time.perf_counter() - t0
            hosts = Counter(r["host"] for r in self.workers_info)
            self.log(f"ray: {workers} worker{'s' * (workers != 1)} ready in {self.timings['ray: start workers']:.0f} s on "
                     + ", ".join(f"{h} (x{k})" for h, k in sorted(hosts.items())))
            self.note_oversubscription(spec.threads, hosts)
            t0 = time.perf_counter()
            yield from self.dispatch(ray, actors, plan, runner, skip)
            self.timings["ray: shards"] = time.perf_counter() - t0  # first dispatch to last merge, as the local loop
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def note_oversubscription(self, threads: Threads, hosts: Counter) -> None:
        """Workers run the driver's thread count; more threads than a node has cores slow every worker down."""
        cpus = {r["host"]: r["cpus"] for r in self.workers_info}
        crowded = [h for h, k in hosts.items() if k * threads.torch > cpus[h]]
        if crowded:
            self.log(f"ray: each worker runs {threads.torch} threads (the driver's, for identical floats), so "
                     f"{', '.join(f'{hosts[h]} workers on {h} ({cpus[h]} cores)' for h in sorted(crowded))} oversubscribe it; "
                     "for one thread per worker, start the driver with OMP_NUM_THREADS=1 (its local runs then match too)")

    def check_ready(self, reports: list[dict[str, Any]]) -> None:
        broken = [r for r in reports if r["problems"]]
        if not broken:
            return
        by_problem: dict[tuple[str, str], list[str]] = {}  # the same problem on many workers of a node: one line
        for r in broken:
            for problem in r["problems"]:
                by_problem.setdefault((r["host"], problem), []).append(str(r["pid"]))
        lines = [f"  worker{'s' * (len(pids) > 1)} on {host} (pid {', '.join(pids)}): {problem}"
                 for (host, problem), pids in by_problem.items()]
        raise RayWorkerError(
            f"--executor ray: {len(broken)} of {len(reports)} workers could not load the run's plugins:\n" + "\n".join(lines)
            + "\nEvery node needs the same sbpet installation and plugins, the models (`sbpet models fetch`), the data "
            "at the same path, and the driver's cache directory (--cache-dir on a file system all nodes share); "
            "see docs/distributed.md")

    def dispatch(self, ray, actors: list[Any], plan: Plan, runner: ShardRunner,
                 skip: Callable[[], set[str]]) -> Iterator[ShardResult]:
        """Shards to idle actors, results yielded in shard order, at most 2 x workers shards ahead of the merge."""
        from ray.exceptions import RayActorError
        from ray.util import ActorPool

        pool = ActorPool(actors)
        window = IN_FLIGHT_PER_WORKER * len(actors)
        done: dict[int, ShardResult] = {}
        dead: set[tuple[str, str]] = set(runner.dead)
        n, submitted, merged = len(plan.shards), 0, 0
        while merged < n:
            while merged in done:  # merged first, so the next dispatch knows of any condition that failed in it
                yield done.pop(merged)
                merged += 1
            if merged == n:
                break
            while submitted < n and submitted - merged < window and pool.has_free():
                # skip() and dead are read at dispatch: a condition known to have failed is not computed again
                pool.submit(lambda actor, i: actor.run.remote(i, sorted(skip()), sorted(dead)), submitted)
                submitted += 1
            try:
                result, stats = pool.get_next_unordered()
            except RayActorError as exc:
                raise RuntimeError(f"--executor ray: a worker died while running a shard (node lost, out of memory, or a crash "
                                   f"in native plugin code: {exc}); the shards finished so far are cached: run the same "
                                   "command again to resume") from exc
            self.account(runner, stats)
            dead.update(result.timed_out)
            runner.dead.update(result.timed_out)
            done[result.shard] = result

    @staticmethod
    def account(runner: ShardRunner, stats: dict[str, Any]) -> None:
        """A worker's cache reads count in the run's totals; its cache warnings reach the run's warnings."""
        for counter in CACHE_COUNTERS:
            setattr(runner.cache, counter, getattr(runner.cache, counter) + stats.get(counter, 0))
        for message in stats.get("warnings", []):
            runner.cache.warn(message)
