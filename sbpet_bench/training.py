"""``sbpet train``: fit one plugin on a run's training split and keep it in the cache."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, RunConfig
from .pipeline import Run

FITTING_KINDS = ("pet", "attacker", "classifier", "verifier", "featurizer")


def train_plugin(name: str, cfg: RunConfig) -> Path:
    """Fit ``name`` exactly as ``sbpet run`` would (same split, options and cache key); return the state's path."""
    runner = Run(cfg)
    kinds = [k for k in FITTING_KINDS if name in runner.registry.entries[k]]
    if not kinds:
        fitting = sorted({n for k in FITTING_KINDS for n, e in runner.registry.entries[k].items() if e.cls.fits})
        raise ConfigError(f"no plugin named {name!r}; plugins that train: {', '.join(fitting)}")
    kind = kinds[0]
    entry = runner.registry.get(kind, name)
    if not entry.cls.fits:
        raise ConfigError(f"{kind} {name!r} has nothing to train")
    with runner.reporter:
        host = runner.setup()
        host.get(kind, name)
        key = host.fit_key(*host.resolve(kind, name))
    return runner.cache.root / "fit" / key[:2] / f"{key}.pt"
