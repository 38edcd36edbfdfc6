"""Leaderboard reports (markdown, CSV, JSON, self-contained HTML) and merging of runs.

Names load on first use (PEP 562), so `sbpet` starts without importing matplotlib.
"""

from importlib import import_module

__all__ = ["write_reports", "merge_runs", "MergeError", "build_leaderboard", "Leaderboard"]
_HOMES = {"write_reports": ".writers", "merge_runs": ".merge", "MergeError": ".merge",
          "build_leaderboard": ".leaderboard", "Leaderboard": ".leaderboard"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
