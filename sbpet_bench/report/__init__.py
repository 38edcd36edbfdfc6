"""Leaderboard reports (markdown, CSV, JSON, self-contained HTML) and merging of runs."""

from .leaderboard import Leaderboard, build_leaderboard
from .merge import MergeError, merge_runs
from .writers import write_reports

__all__ = ["write_reports", "merge_runs", "MergeError", "build_leaderboard", "Leaderboard"]
