"""Scoring speed of the default evaluator panel, now and at an earlier git revision (prints a table).

Each panel plugin is built as the harness builds it (registry entry, default options, a context
whose model store is the real one) and scores LFW3D images the way the harness's scoring stage does:
shards of ``--batch`` images, resized to the plugin's ``input_size`` inside the timed region, under
``torch.no_grad``, in the panel's order (so that evaluators which share work, like hm-faceres-gender
and hm-faceres, share it here too). With ``--baseline REV`` the same plugins as they were at that git
revision (their package files read with ``git show``, imported under another name) score the same
images, interleaved repeat by repeat with the current ones, so that both see the same machine load;
the table gives both speeds and the largest output difference between them.

The machine may be shared: the load average is printed before and after, next to the figures.
Run from the repo root, e.g.

    nice -n 5 uv run python benchmarks/panel_speed.py --baseline HEAD [--images 256] [--repeats 3] [--only hm-gear]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sbpet_bench.allocator import keep_freed_memory
from sbpet_bench.api import resize
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import REPO_ROOT, load_lfw3d_sample, make_context

PANEL = [("classifier", "faceapi-gender"), ("classifier", "hm-faceres-gender"), ("classifier", "hm-gear"),
         ("verifier", "faceapi-resnet"), ("verifier", "hm-faceres"), ("verifier", "hm-mobileface"),
         ("featurizer", "hm-antispoof")]
METHOD = {"classifier": "predict_male", "verifier": "embed", "featurizer": "features"}
PACKAGES = {"hm-": "sbpet_humanmodels", "faceapi-": "sbpet_faceapi"}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def import_at_revision(package: str, rev: str, into: Path) -> object:
    """``plugins/<package>`` as it was at ``rev``, imported as ``baseline_<package>`` (its relative imports intact)."""
    folder = f"plugins/{package}"
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{folder}"], cwd=REPO_ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    target = into / package
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "show", f"{rev}:{folder}/{name}"], cwd=REPO_ROOT, check=True,
                                  capture_output=True, text=True).stdout
            (target / name).write_text(text)
    alias = f"baseline_{package}"
    spec = importlib.util.spec_from_file_location(alias, target / "__init__.py", submodule_search_locations=[str(target)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def baseline_class(entry_cls: type, rev_packages: dict[str, object]) -> type:
    """The class of the same name, from the package as it was at the baseline revision."""
    package = next(p for prefix, p in PACKAGES.items() if entry_cls.name.startswith(prefix))
    module = importlib.import_module(f"baseline_{package}.plugin")
    return getattr(module, entry_cls.__name__)


def score(plugins: list[tuple[str, str, object]], shards: list[torch.Tensor]
          ) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray]]:
    """Wall and CPU seconds each plugin spent, and its outputs; every plugin scores a shard before the next shard.

    CPU time (this process, all threads) is steadier than wall time on a shared machine, but it also
    counts the threads' spin-waiting, so neither alone tells the whole story.
    """
    wall = {name: 0.0 for _, name, _ in plugins}
    cpu = dict(wall)
    outputs: dict[str, list[np.ndarray]] = {name: [] for _, name, _ in plugins}
    with torch.no_grad():
        for shard in shards:
            for kind, name, plugin in plugins:
                start, start_cpu = time.perf_counter(), time.process_time()
                out = getattr(plugin, METHOD[kind])(resize(shard, plugin.input_size))
                wall[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - start_cpu
                outputs[name].append(out.float().cpu().numpy())
    return wall, cpu, {name: np.concatenate(parts) for name, parts in outputs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="LFW3D images (half male, half female)")
    parser.add_argument("--batch", type=int, default=64, help="images per shard, as the harness scores them")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images (the fastest counts)")
    parser.add_argument("--baseline", default="", help="git revision whose plugins to time alongside (e.g. HEAD)")
    parser.add_argument("--only", default="", help="comma-separated evaluator names (default: the whole panel)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--allocator-default", action="store_true", help="leave glibc's heap top pad as it is "
                        "(default: the 1 GiB pad that sbpet run sets, sbpet_bench/allocator.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    padded = not args.allocator_default and keep_freed_memory()

    registry = load_registry()
    store = ModelStore(None, registry.assets)
    context = make_context(tempfile.mkdtemp(prefix="sbpet-speed-"), model_path=lambda name: store.path(name, fetch=False))
    only = {n for n in args.only.split(",") if n}
    panel = [(kind, name) for kind, name in PANEL if not only or name in only]
    images = load_lfw3d_sample(per_class=args.images // 2, seed=0).images
    shards = [images[i:i + args.batch] for i in range(0, len(images), args.batch)]

    current = [(kind, name, registry.get(kind, name).create(registry.get(kind, name).parse_options({}), context))
               for kind, name in panel]
    variants = {"current": current}
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="sbpet-baseline-") as tmp:
            packages = {p: import_at_revision(p, args.baseline, Path(tmp)) for p in set(PACKAGES.values())}
            variants["baseline"] = [(kind, name, baseline_class(type(plugin), packages)({}, context))
                                    for kind, name, plugin in current]

    print(f"{len(images)} LFW3D images in shards of {args.batch}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; glibc heap top pad {'1 GiB (as sbpet run)' if padded else 'default'}; "
          f"load average before: {load_average()}", flush=True)
    best: dict[str, dict[str, float]] = {v: {} for v in variants}
    best_cpu: dict[str, dict[str, float]] = {v: {} for v in variants}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for plugins in variants.values():  # warm-up: first-call allocations and lazy initialisation stay out of the timing
        score(plugins, shards[:1])
    for repeat in range(args.repeats):
        for variant, plugins in variants.items():
            seconds, cpu_seconds, outputs[variant] = score(plugins, shards)
            for name, s in seconds.items():
                best[variant][name] = min(best[variant].get(name, float("inf")), s)
                best_cpu[variant][name] = min(best_cpu[variant].get(name, float("inf")), cpu_seconds[name])
        print(f"  pass {repeat + 1}/{args.repeats} done; load average {load_average()}", flush=True)

    per_image = {v: {name: 1000.0 * s / len(images) for name, s in times.items()} for v, times in best.items()}
    cpu_per_image = {v: {name: 1000.0 * s / len(images) for name, s in times.items()} for v, times in best_cpu.items()}
    if "baseline" in variants:
        print(f"\n| evaluator | ms/image at {args.baseline} | ms/image now | speed-up | CPU ms/image at {args.baseline} "
              "| CPU ms/image now | max abs output difference |")
        print("|---|---|---|---|---|---|---|")
        rows = [(name, float(np.abs(outputs["baseline"][name] - outputs["current"][name]).max())) for _, name in panel]
        for name, diff in rows + [("panel total", None)]:
            pick = (lambda table: table[name]) if diff is not None else (lambda table: sum(table.values()))
            old, new = pick(per_image["baseline"]), pick(per_image["current"])
            old_cpu, new_cpu = pick(cpu_per_image["baseline"]), pick(cpu_per_image["current"])
            print(f"| {name} | {old:.1f} | {new:.1f} | {old / new:.2f}x | {old_cpu:.1f} | {new_cpu:.1f} | "
                  f"{'' if diff is None else f'{diff:.2e}'} |")
    else:
        print("\n| evaluator | ms/image | CPU ms/image |\n|---|---|---|")
        for _, name in panel:
            print(f"| {name} | {per_image['current'][name]:.1f} | {cpu_per_image['current'][name]:.1f} |")
        print(f"| panel total | {sum(per_image['current'].values()):.1f} | {sum(cpu_per_image['current'].values()):.1f} |")
    print(f"\nload average after: {load_average()}; fastest of {args.repeats} passes; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
