"""How far PrivacyNet's scores move with its training seed (prints numbers; asserts nothing; changes no default).

Trains PrivacyNet once per seed (``privacynet[seed=N]``: PrivacyNet's own ``seed`` option, which trains other
networks while the run's ``--seed`` still draws the evaluation faces, so every training is scored on the same
faces) with its default options otherwise, scores each with the harness's evaluators through ``sbpet run``, and
prints per seed the privacy AUC of each gender classifier and the protected-vs-original EER of each verifier,
then the spread (max - min). This measures the reported evaluators' view of PrivacyNet; it is not for choosing
settings (the project tunes defaults on PrivacyNet's internal models only: benchmarks/privacynet_budget.py).

The auxiliary models (cnn-gender, resnet-gender-probe) are fitted once by ``sbpet train`` into the shared cache,
then the seeds' runs go in parallel (``--jobs``), each at one torch thread (OMP_NUM_THREADS=1: PrivacyNet trains
at one thread anyway, and on a shared CPU more threads per process only spin). Re-running reuses every fit.
``--print-commands`` prints the sbpet commands (shell-quoted) and runs nothing.

    .venv/bin/python benchmarks/privacynet_seeds.py --out runs/privacynet-seeds [--seeds 0,1,2] [--per-class 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

PET = "privacynet"


def common_args(args) -> list[str]:
    return ["--data", args.data, "--per-class", str(args.per_class), "--cache-dir", str(Path(args.out) / "cache")]


def sbpet(*argv: str) -> list[str]:
    """The sbpet command of this interpreter's environment."""
    return [str(Path(sys.executable).parent / "sbpet"), *argv]


def aux_command(args, aux: str) -> list[str]:
    """``sbpet train`` of one auxiliary model into the cache that the seeds' runs share."""
    return sbpet("train", aux, *common_args(args), "--out", str(Path(args.out) / "aux"))


def run_command(args, seed: int) -> list[str]:
    """``sbpet run`` of ``privacynet[seed=SEED]`` (extra options as ``--option privacynet.NAME=VALUE``, below the seed)."""
    return sbpet("run", *common_args(args), "--pets", f"{PET}[seed={seed}]",
                 *[a for o in args.option for a in ("--option", f"{PET}.{o}")],
                 "--classifiers", args.classifiers, "--verifiers", args.verifiers, "--metrics", "gender,verification",
                 "--no-informed", "--bootstrap", "0", "--quiet", "--out", str(Path(args.out) / f"seed{seed}"))


def scores(results: Path) -> dict[str, float]:
    """privacy AUC per classifier and protected-vs-original EER per verifier of the PET's unattacked condition."""
    got = {}
    for cond in json.loads(results.read_text())["conditions"]:
        if cond["pet"].split("[")[0] != PET or cond["attacker"] != "none":
            continue
        for m in cond["metrics"]:
            if m["metric"] == "privacy_auc" and m["extra"].get("tier") == "off-the-shelf":
                got[f"privacy AUC {m['evaluator']}"] = m["value"]
            elif m["metric"] == "eer" and m["protocol"] == "protected-vs-original":
                got[f"EER {m['evaluator']}"] = m["value"]
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/privacynet-seeds")
    ap.add_argument("--data", default="../shared/data/lfw3d")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--per-class", type=int, default=200, help="evaluation faces per gender (the same for every seed)")
    ap.add_argument("--classifiers", default="faceapi-gender,hm-faceres-gender,hm-gear")
    ap.add_argument("--verifiers", default="faceapi-resnet,hm-faceres,hm-mobileface")
    ap.add_argument("--jobs", type=int, default=3, help="seeds trained at the same time")
    ap.add_argument("--option", action="append", default=[], help=f"extra {PET} option NAME=VALUE (all seeds; "
                    "not seed, which each run sets)")
    ap.add_argument("--print-commands", action="store_true", help="print the sbpet commands and run nothing")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if any(o.split("=", 1)[0].strip() == "seed" for o in args.option):
        ap.error("--option seed=...: each run sets privacynet's seed itself; choose them with --seeds")
    if args.print_commands:
        for aux in ("cnn-gender", "resnet-gender-probe"):
            print(shlex.join(aux_command(args, aux)))
        for seed in seeds:
            print("OMP_NUM_THREADS=1 " + shlex.join(run_command(args, seed)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    for aux in ("cnn-gender", "resnet-gender-probe"):  # once, before the parallel runs would each fit them
        subprocess.run(aux_command(args, aux), check=True, env=env)
    print(f"auxiliary models fitted ({time.perf_counter() - t0:.0f} s)", flush=True)

    pending, running = list(seeds), {}
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            log = open(out / f"seed{seed}.log", "w")
            running[seed] = (subprocess.Popen(run_command(args, seed), env=env, stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(5)
        for seed, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[seed]
                print(f"seed {seed}: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s "
                      f"(load {os.getloadavg()[0]:.2f}); log {out / f'seed{seed}.log'}", flush=True)

    table = {s: scores(out / f"seed{s}" / "results.json") for s in seeds if (out / f"seed{s}" / "results.json").exists()}
    names = sorted({k for row in table.values() for k in row})
    print("seed  " + "  ".join(f"{n:>28}" for n in names))
    for s, row in table.items():
        print(f"{s:<5} " + "  ".join(f"{row.get(n, float('nan')):>28.3f}" for n in names))
    if len(table) > 1:
        spread = {n: max(r[n] for r in table.values() if n in r) - min(r[n] for r in table.values() if n in r) for n in names}
        print("spread" + "  ".join(f"{spread[n]:>28.3f}" for n in names))
    print(f"{len(table)} of {len(seeds)} seeds scored in {time.perf_counter() - t0:.0f} s; load average now "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
