"""``sbpet run`` as phases: set-up, plan, informed tier, execute (local or Ray), measure, write.

Modules follow the phases: :mod:`.host` (plugins, their keys and fitting), :mod:`.plan` (shards and
the key of every task), :mod:`.stages` (one shard through every condition), :mod:`.executors`
(local streaming or Ray), :mod:`.informed` (the informed attacker tier), :mod:`.measure` (metrics),
:mod:`.checks` (guarded plugin calls and output checks), :mod:`.data_phase` (set-up: data, splits,
alignment), :mod:`.run` (the phases in order).
"""

from .checks import StageError, parse_spec
from .data_phase import resolve_device
from .run import Run, TrainingSplit, run, training_split

__all__ = ["Run", "TrainingSplit", "training_split", "run", "parse_spec", "resolve_device", "StageError"]
