"""The cache as a shared meeting point: damaged entries are misses, concurrent writers never expose a
partial entry, a killed writer leaves nothing trusted and its leftovers are swept."""

import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sbpet_bench import cache as cache_module
from sbpet_bench.cache import HEADER, TRAILER, Cache, CacheWarning, is_stale_temp, seal, unseal

REPO = Path(__file__).resolve().parent.parent
KEY = "ab" + "0" * 22


def _quiet_cache(root: Path, **kw) -> tuple[Cache, list[str]]:
    said: list[str] = []
    return Cache(root, warn=said.append, **kw), said


# --------------------------------------------------------------------------- the three entry types


def _arrays(v: float = 0.25) -> dict[str, np.ndarray]:
    return {"p_male": np.array([v, 0.5, 0.75], dtype=np.float32), "ids": np.array(["a", "b", "c"])}


def _state(v: float = 0.25) -> dict[str, torch.Tensor]:
    return {"weight": torch.tensor([[v, 2.0], [3.0, 4.0]]), "bias": torch.tensor([0.5])}


def _json(v: float = 0.25) -> list[dict]:
    return [{"metric": "auc", "value": v, "n": 3}]


KINDS = {
    # kind: (put, get, make value, suffix, equal)
    "arrays": ("put_arrays", "get_arrays", _arrays, ".npz",
               lambda a, b: a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)),
    "json": ("put_json", "get_json", _json, ".json", lambda a, b: a == b),
    "state": ("put_state", "get_state", _state, ".pt",
              lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)),
}


def _payload_of(kind: str, value) -> bytes:
    """The bytes the cache stores for a value (to forge an entry whose framing is intact)."""
    buf = io.BytesIO()
    if kind == "arrays":
        np.savez(buf, **value)
        return buf.getvalue()
    if kind == "state":
        torch.save(value, buf)
        return buf.getvalue()
    return json.dumps(value).encode()


def _truncate_half(blob: bytes, kind: str) -> bytes:
    return blob[: len(blob) // 2]


def _drop_last_byte(blob: bytes, kind: str) -> bytes:
    return blob[:-1]


def _flip_payload_byte(blob: bytes, kind: str) -> bytes:
    i = len(HEADER) + (len(blob) - len(HEADER) - TRAILER.size) // 2
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1:]


def _altered_value(blob: bytes, kind: str) -> bytes:
    """A well-formed payload of the same length holding another value, inside the original frame."""
    make = KINDS[kind][2]
    payload = _payload_of(kind, make(0.75))
    assert len(payload) == len(blob) - len(HEADER) - TRAILER.size  # only the checksum can tell
    return HEADER + payload + blob[-TRAILER.size:]


def _empty(blob: bytes, kind: str) -> bytes:
    return b""


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_entries_round_trip_and_count_hits(tmp_path, kind):
    put, get, make, suffix, equal = KINDS[kind]
    cache, said = _quiet_cache(tmp_path)
    assert getattr(cache, get)("k", KEY) is None and cache.misses == 1
    getattr(cache, put)("k", KEY, make())
    assert equal(getattr(cache, get)("k", KEY), make())
    assert (cache.hits, cache.misses, cache.rejected) == (1, 1, 0) and said == []
    refreshing = Cache(tmp_path, refresh=True)
    assert getattr(refreshing, get)("k", KEY) is None and refreshing.misses == 1  # --refresh: reads miss


@pytest.mark.parametrize("damage", [_truncate_half, _drop_last_byte, _flip_payload_byte, _altered_value, _empty])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_entries_are_rejected_then_recomputed(tmp_path, kind, damage):
    put, get, make, suffix, equal = KINDS[kind]
    cache, said = _quiet_cache(tmp_path)
    getattr(cache, put)("k", KEY, make())
    path = tmp_path / "k" / KEY[:2] / f"{KEY}{suffix}"
    path.write_bytes(damage(path.read_bytes(), kind))

    assert getattr(cache, get)("k", KEY) is None  # never the damaged value, never an exception
    assert (cache.hits, cache.misses, cache.rejected) == (0, 1, 1)
    assert len(said) == 1 and str(path) in said[0] and "recomputing" in said[0]
    getattr(cache, put)("k", KEY, make())  # the caller recomputes and overwrites
    assert equal(getattr(cache, get)("k", KEY), make()) and cache.hits == 1


def test_pipeline_kinds_are_planned_as_cached_only_when_framed(tmp_path):
    cache, _ = _quiet_cache(tmp_path)
    cache.put_arrays("scores", KEY, _arrays())
    cache.put_state("fit", KEY, _state())
    assert cache.contains("scores", KEY) and cache.contains("fit", KEY) and not cache.contains("images", KEY)
    path = tmp_path / "scores" / KEY[:2] / f"{KEY}.npz"
    path.write_bytes(path.read_bytes()[:-10])
    assert not cache.contains("scores", KEY)


def test_an_entry_copied_under_another_key_is_rejected(tmp_path):
    cache, said = _quiet_cache(tmp_path)
    other = "ab" + "1" * 22
    cache.put_arrays("scores", KEY, _arrays(0.1))
    shutil.copy(tmp_path / "scores" / "ab" / f"{KEY}.npz", tmp_path / "scores" / "ab" / f"{other}.npz")
    assert cache.get_arrays("scores", other) is None and cache.rejected == 1 and "checksum" in said[0]


def test_old_entries_without_checksum_are_misses_with_one_warning(tmp_path):
    folder = tmp_path / "scores" / "ab"
    folder.mkdir(parents=True)
    keys = ["ab" + str(i) * 22 for i in range(3)]
    for key in keys:  # the pre-checksum format: a bare .npz
        np.savez(folder / f"{key}.npz", **_arrays())
    cache = Cache(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert all(cache.get_arrays("scores", k) is None for k in keys)
    assert cache.rejected == 3
    assert [w.category for w in caught] == [CacheWarning] and "older sbpet" in str(caught[0].message)


def test_unseal_names_the_problem():
    blob = seal("k/x.json", b"[1, 2]")
    assert unseal("k/x.json", blob) == (b"[1, 2]", "")
    assert unseal("k/x.json", b"[1, 2, 3, 4]")[1] == "old"
    assert "truncated" in unseal("k/x.json", blob[:-3])[1]
    assert "checksum" in unseal("k/y.json", blob)[1]


# --------------------------------------------------------------------------- concurrent writers


N_WORKERS, ROUNDS, SHARED_KEYS, ARRAY_LEN = 8, 30, 3, 50_000


def _worker(root: str, worker: int, results) -> None:
    said: list[str] = []
    cache = Cache(root, warn=said.append)
    rng = np.random.default_rng(worker)
    seen = bad = 0
    for i in range(ROUNDS):
        stamp = worker * 1000 + i
        key = f"cc{i % SHARED_KEYS:022d}"
        cache.put_arrays("images", key, {"v": np.full(ARRAY_LEN, stamp, dtype=np.float64), "stamp": np.array([stamp])})
        cache.put_json("metrics", key, {"stamp": stamp, "v": [stamp] * 2000})
        for other in rng.permutation(SHARED_KEYS):
            other_key = f"cc{other:022d}"
            arrays = cache.get_arrays("images", other_key)
            doc = cache.get_json("metrics", other_key)
            for got in (arrays, doc):
                if got is None:
                    continue  # not written yet by anybody
                seen += 1
                stamp_read = int(got["stamp"][0]) if got is arrays else got["stamp"]
                values = got["v"]
                if len(values) != (ARRAY_LEN if got is arrays else 2000) or not np.all(np.asarray(values) == stamp_read):
                    bad += 1  # a mix of two writers' entries, or a partial one
    results.put((worker, seen, bad, cache.rejected, said[:3]))


def test_concurrent_writers_and_readers_only_ever_see_complete_entries(tmp_path):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, results)) for w in range(N_WORKERS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(seen for _, seen, _, _, _ in got) > N_WORKERS * ROUNDS  # readers did read while others wrote
    assert [(w, bad, rejected, said) for w, _, bad, rejected, said in got if bad or rejected or said] == []
    # One complete entry per key won; nobody left a temporary file behind.
    cache = Cache(tmp_path)
    for k in range(SHARED_KEYS):
        arrays = cache.get_arrays("images", f"cc{k:022d}")
        assert arrays is not None and np.all(arrays["v"] == arrays["stamp"][0])
    assert list(tmp_path.rglob("*.tmp")) == []


# --------------------------------------------------------------------------- a killed writer


SLOW_WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from sbpet_bench import cache as cache_module

    def stall(fd):  # the payload is in the temporary file; the rename has not happened
        print("writing", flush=True)
        time.sleep(120)

    cache_module.os.fsync = stall
    cache_module.Cache(sys.argv[1]).put_arrays("scores", sys.argv[2], {"p_male": np.full(10_000, 0.5)})
""")


def test_a_killed_writer_leaves_nothing_trusted_and_its_temp_is_swept(tmp_path):
    script = tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER)
    root = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(script), str(root), KEY], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    folder = root / "scores" / KEY[:2]
    temps = list(folder.glob("*.tmp"))
    assert len(temps) == 1 and f".{proc.pid}." in temps[0].name and temps[0].stat().st_size > 0
    assert not (folder / f"{KEY}.npz").exists()

    cache, said = _quiet_cache(root)
    assert cache.get_arrays("scores", KEY) is None and cache.rejected == 0 and said == []  # a plain miss
    assert not is_stale_temp(temps[0], grace=3600)  # just killed: left alone for the grace period
    assert is_stale_temp(temps[0], grace=0)

    cache, _ = _quiet_cache(root, dead_writer_grace=0)
    cache.put_arrays("scores", KEY, {"p_male": np.full(10_000, 0.5)})  # the re-run writes the same folder
    assert cache.stale_removed == 1 and list(folder.glob("*.tmp")) == []
    assert np.all(cache.get_arrays("scores", KEY)["p_male"] == 0.5)


def test_live_and_foreign_temps_are_kept_until_old(tmp_path):
    cache, _ = _quiet_cache(tmp_path, dead_writer_grace=0)
    folder = tmp_path / "scores" / KEY[:2]
    folder.mkdir(parents=True)
    live = folder / f".{KEY}.npz.{cache_module._HOST}.{os.getppid()}.x1.tmp"
    foreign = folder / f".{KEY}.npz.some-other-host.1.x2.tmp"
    unnamed = folder / f".{KEY}.npz.x3.tmp"  # the pre-checksum writer's names: no host or pid
    for path in (live, foreign, unnamed):
        path.write_bytes(b"partial")
    assert cache.sweep() == 0 and all(p.exists() for p in (live, foreign, unnamed))
    two_hours_ago = time.time() - 7200
    for path in (foreign, unnamed):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert cache.sweep() == 2 and live.exists() and not foreign.exists() and not unnamed.exists()


# --------------------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def synthetic_faces(tmp_path_factory) -> Path:
    """A folders-layout data set of 64 small synthetic images, gender visible in the colour (no real data needed)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for gender, tint in (("male", (40, 0, 0)), ("female", (0, 0, 40))):
        (root / gender).mkdir()
        for person in range(24):
            face = rng.integers(60, 200, size=(32, 32, 3))
            for shot in range(2):
                img = np.clip(face + np.array(tint) + rng.integers(-20, 20, size=face.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / gender / f"{gender}{person:02d}_{shot}.png")
    return root


def _config(data: Path, tmp_path: Path):
    from sbpet_bench.config import RunConfig

    cfg = RunConfig(data=str(data), out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), pets=["identity"],
                    attackers=[], per_class=12, train_per_class=8, pool_per_class=4, batch_size=8, bootstrap=10,
                    classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[], metrics=["gender"], quiet=True,
                    informed=False)  # no informed tier: it trains classifiers, and this test is about the cache
    return cfg


def _values(results) -> dict:
    return {(c["pet"], c["attacker"], m["metric"], m["evaluator"], m["protocol"]): m["value"]
            for c in results["conditions"] for m in c["metrics"]}


def test_damaged_entries_are_recomputed_through_the_pipeline(synthetic_faces, tmp_path):
    from sbpet_bench.pipeline import run as run_pipeline
    from sbpet_bench.plugins import load_registry

    registry = load_registry([])
    cfg = _config(synthetic_faces, tmp_path)

    def run(cfg):
        return run_pipeline(cfg, registry=registry)

    first = run(cfg)
    assert _values(first) and any(k[3] == "hog-logreg" for k in _values(first))
    assert run(cfg)["cache"]["misses"] == 0

    score = sorted((tmp_path / "cache" / "scores").rglob("*.npz"))[0]
    score.write_bytes(score.read_bytes()[:-7])  # truncated: used to crash the re-run (BadZipFile)
    again = run(cfg)  # the run puts the cache's warnings into results.json
    assert any("truncated" in w for w in again["warnings"])
    assert again["cache"]["misses"] == 1 and _values(again) == _values(first)

    fits = sorted((tmp_path / "cache" / "fit").rglob("*.pt"))
    for fit in fits:  # damaged fitted states: used to drop the evaluator silently
        fit.write_bytes(_flip_payload_byte(fit.read_bytes(), "state"))
    refit = run(cfg)
    assert any("checksum" in w for w in refit["warnings"])
    assert {f"fit:{name}" for name in ("hog-logreg", "pca-pixels")} <= set(refit["timings"])
    assert _values(refit) == _values(first)
    assert run(cfg)["cache"]["misses"] == 0  # the recomputed entries were written back whole
