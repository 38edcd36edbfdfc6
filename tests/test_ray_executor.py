"""--executor ray on a local Ray instance: the same results as --executor local, bit for bit.

Ray starts once for the module (4 CPUs, even on a 2-core machine: workers only need a slot each).
Every Ray run uses a fresh cache, so the shards are really computed by the workers (a probe PET
reports the process and thread counts it ran with), and its results must equal the local run's.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as the executor does: workers use this environment as it is
ray = pytest.importorskip("ray", reason="Ray is not installed; install the extra with `uv sync --extra ray` (CI does)")
torch = pytest.importorskip("torch")

from sbpet_bench.config import RunConfig  # noqa: E402
from sbpet_bench.pipeline import run  # noqa: E402
from sbpet_bench.pipeline.ray_executor import RayWorkerError  # noqa: E402
from sbpet_bench.plugins import load_registry  # noqa: E402

HERE = Path(__file__).parent
FAULTY = HERE / "plugins" / "faulty_pets.py"

PROBE = '''
import os
import time

import torch
from threadpoolctl import threadpool_info

from sbpet_bench import hookimpl
from sbpet_bench.api import PET, ProtectResult

DRIVER_PID = {pid}


class WhereAmI(PET):
    """The images unchanged; diagnostics say which process ran the shard, with how many threads."""

    name = "where-am-i"

    def protect(self, batch):
        info = {{"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                 "interop_threads": torch.get_num_interop_threads(),
                 "blas": {{p["prefix"]: p["num_threads"] for p in threadpool_info()}}}}
        return ProtectResult(batch.images.clone(), [info] * len(batch.ids))


class DriverOnly(PET):
    """Loads on the driver only, as a plugin would whose model file is missing on the workers' node."""

    name = "driver-only"

    def __init__(self, options, context):
        super().__init__(options, context)
        if os.getpid() != DRIVER_PID:
            raise RuntimeError("the licence file of driver-only is not on this node")

    def protect(self, batch):
        return ProtectResult(batch.images.clone())


class SlowNoise(PET):
    name = "slow-noise"

    def protect(self, batch):
        time.sleep(0.7)
        return ProtectResult((batch.images + 0.2 * torch.randn_like(batch.images)).clamp(0, 1))


@hookimpl
def sbpet_register_pets():
    return [WhereAmI, DriverOnly, SlowNoise]
'''

PETS = ["identity", "blur", "noise", "nan-pet", "where-am-i"]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module; yields its address (for CLI drivers that join it)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugins") / "probe_pets.py"
    path.write_text(PROBE.format(pid=os.getpid()))
    return path


@pytest.fixture(scope="module")
def registry(probe):
    return load_registry([str(FAULTY), str(probe)])


def _cfg(data: Path, out: Path, probe: Path, **kw) -> RunConfig:
    base = dict(data=str(data), out=str(out), cache_dir=str(out) + "-cache", per_class=12, train_per_class=40,
                pool_per_class=8, batch_size=8, shard_size=4, bootstrap=20, classifiers=["hog-logreg"],
                verifiers=["pca-pixels"], featurizers=[], quiet=True, plugins=[str(FAULTY), str(probe)], informed=False,
                pets=PETS)
    base.update(kw)
    return RunConfig(**base)


def _measured(results: dict) -> str:
    """Everything a run measured (conditions with metrics, statuses and errors, tiers), as canonical JSON."""
    return json.dumps({"conditions": results["conditions"], "tiers": results["tiers"]}, sort_keys=True)


def _probe_lines(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "diagnostics.jsonl").read_text().splitlines()]
    return [d for d in lines if d["pet"] == "where-am-i"]


@pytest.fixture(scope="module")
def local_results(small_data, tmp_path_factory, probe, registry):
    return run(_cfg(small_data, tmp_path_factory.mktemp("local") / "run", probe), registry=registry)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_ray_results_equal_local_bit_for_bit(workers, ray_cluster, small_data, tmp_path, probe, registry, local_results):
    out = tmp_path / "ray"
    results = run(_cfg(small_data, out, probe, executor="ray", ray_workers=workers), registry=registry)
    assert _measured(results) == _measured(local_results)
    assert results["dataset"]["n_eval"] == 24  # 6 shards of 4
    status = {c["pet"]: c["status"] for c in results["conditions"] if c["attacker"] == "none"}
    assert status["nan-pet"] == "failed" and status["blur"] == "ok"
    # The workers' cache reads count in the run's totals. One worker reads exactly what the local run reads;
    # more may also compute nan-pet on shards that were under way before its failure on shard 0 was merged.
    if workers == 1:
        assert results["cache"] == local_results["cache"]
    assert results["cache"]["misses"] >= local_results["cache"]["misses"] > 0
    assert "ray: start workers" in results["timings"]
    # The shards ran in `workers` worker processes, never in this driver, with the driver's thread counts.
    probes = _probe_lines(out)
    assert len(probes) == 24
    assert os.getpid() not in {d["pid"] for d in probes}
    assert len({d["pid"] for d in probes}) == workers
    assert {d["torch_threads"] for d in probes} == {torch.get_num_threads()}
    assert {d["interop_threads"] for d in probes} == {torch.get_num_interop_threads()}
    from threadpoolctl import threadpool_info

    mine = {p["prefix"]: p["num_threads"] for p in threadpool_info()}
    for d in probes:
        shared = set(d["blas"]) & set(mine)
        assert shared and {k: d["blas"][k] for k in shared} == {k: mine[k] for k in shared}


def test_ray_with_the_informed_tier_equals_local(ray_cluster, small_data, tmp_path, probe, registry):
    informed = dict(pets=["identity", "blur"], informed=True, informed_classifiers=["hog-logreg"])
    local = run(_cfg(small_data, tmp_path / "local", probe, **informed), registry=registry)
    remote = run(_cfg(small_data, tmp_path / "ray", probe, executor="ray", ray_workers=2, **informed), registry=registry)
    assert _measured(remote) == _measured(local)
    blur = next(c for c in remote["conditions"] if c["pet"] == "blur" and c["attacker"] == "none")
    assert {"informed:hog-logreg", "mixed:hog-logreg"} <= {m["evaluator"] for m in blur["metrics"]}


def test_a_plugin_that_cannot_load_on_a_worker_stops_the_run_naming_it(ray_cluster, small_data, tmp_path, probe, registry):
    cfg = _cfg(small_data, tmp_path / "ray", probe, pets=["identity", "driver-only"], executor="ray", ray_workers=1)
    with pytest.raises(RayWorkerError) as info:
        run(cfg, registry=registry)
    message = str(info.value)
    assert "1 of 1 workers could not load" in message
    assert "pet 'driver-only'" in message and "licence file of driver-only is not on this node" in message
    assert "worker on " in message and "pid " in message  # which worker, on which host
    assert "docs/distributed.md" in message


def test_a_killed_ray_run_resumes_from_the_cache(ray_cluster, small_data, tmp_path, probe, capsys):
    args = ["--pets", "slow-noise", "--data", str(small_data), "--per-class", "24", "--train-per-class", "40",
            "--pool-per-class", "8", "--batch-size", "4", "--bootstrap", "20", "--classifiers", "hog-logreg",
            "--verifiers", "pca-pixels", "--featurizers", "", "--no-informed", "--plugin", str(probe),
            "--executor", "ray", "--ray-address", ray_cluster, "--ray-workers", "2", "--quiet",
            "--out", str(tmp_path / "resumed"), "--cache-dir", str(tmp_path / "cache")]
    with open(tmp_path / "killed.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sbpet_bench.cli", "run", *args], start_new_session=True, stderr=err)
        images = tmp_path / "cache" / "images"
        deadline = time.time() + 300
        while time.time() < deadline and (not images.exists() or len(list(images.rglob("*.npz"))) < 4):
            time.sleep(0.2)
            assert proc.poll() is None, "the run ended before it could be killed: " + (tmp_path / "killed.err").read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = len(list(images.rglob("*.npz")))
    assert 4 <= done_before < 12, done_before  # killed half-way: 12 shards in all
    quiet_err = (tmp_path / "killed.err").read_text()
    assert "eta" not in quiet_err and "ray" not in quiet_err.lower(), quiet_err  # --quiet: no progress, no Ray log lines

    def cfg(out: str, cache: str, **kw) -> RunConfig:  # the command line's run, as a configuration
        return RunConfig(data=str(small_data), out=str(tmp_path / out), cache_dir=str(tmp_path / cache), pets=["slow-noise"],
                         per_class=24, train_per_class=40, pool_per_class=8, batch_size=4, bootstrap=20,
                         classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[], informed=False,
                         plugins=[str(probe)], **kw)

    # The same run again, on Ray with the progress display: the finished shards come from the cache.
    capsys.readouterr()
    resumed = run(cfg("resumed", "cache", executor="ray", ray_workers=2), registry=load_registry([str(probe)]))
    shown = capsys.readouterr().err
    assert resumed["cache"]["hits"] >= done_before
    assert "protect slow-noise" in shown and "48/48" in shown and "eta" in shown  # one display, aggregated over the workers
    assert "ray: 2 workers ready" in shown
    # A clean local run measures the same.
    clean = run(cfg("clean", "clean-cache", quiet=True), registry=load_registry([str(probe)]))
    assert json.dumps(resumed["conditions"], sort_keys=True) == json.dumps(clean["conditions"], sort_keys=True)
