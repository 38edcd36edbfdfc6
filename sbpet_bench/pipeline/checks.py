"""Guarded plugin calls: every way plugin code can go wrong becomes a StageError naming the plugin.

A plugin may raise anything (``SystemExit`` included), hang, or return the wrong shape, dtype, range
or NaN. None of that may end the run or lose other plugins' results: the harness reports the plugin
by name and batch and goes on. Only the user's Ctrl-C (``KeyboardInterrupt``) stops a run.
"""

from __future__ import annotations

import re
import signal
import threading
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from ..config import ConfigError, parse_spec  # noqa: F401 - parse_spec is re-exported here

TOLERANCE = 1e-3  # how far outside [0, 1] an output may stray before it counts as wrong
T = TypeVar("T")


class StageError(Exception):
    """A plugin failed on a batch: raised, hung, or returned the wrong shape, dtype, range or NaN."""

    def __init__(self, message: str, who: tuple[str, str] | None = None, *, timed_out: bool = False):
        super().__init__(message)
        self.message = message
        self.who = who  # (plugin name, kind)
        self.timed_out = timed_out


class _Timeout(BaseException):
    """Raised inside plugin code by the alarm; a BaseException so that plugins' ``except Exception`` lets it pass."""


_alarm_armed = False  # one alarm at a time: a plugin calling another (a fit asking for its probe) stays under the outer one


def guarded(fn: Callable[[], T], who: tuple[str, str], timeout: float | None, *, grad: bool = False) -> T:
    """Run plugin code ``fn``; exceptions and a timeout become a StageError naming ``who``.

    The timeout is an interval-timer alarm whose handler raises inside the plugin's Python code, so
    a plugin that never returns is unwound (not abandoned in a thread: native libraries such as
    triton abort when first imported off the main thread). Signals reach only the main thread;
    elsewhere (e.g. a Ray worker's thread) the call runs without a timeout.
    """
    global _alarm_armed
    use_alarm = bool(timeout and timeout > 0 and not _alarm_armed and hasattr(signal, "setitimer")
                     and threading.current_thread() is threading.main_thread())

    def on_alarm(signum, frame):  # noqa: ARG001
        raise _Timeout()

    previous = None
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(timeout))
        _alarm_armed = True
    try:
        with torch.set_grad_enabled(grad):
            return fn()
    except _Timeout:
        raise StageError(f"{who[1]} {who[0]} did not return within {timeout:g} s (--plugin-timeout); "
                         "it is left out of the rest of the run", who, timed_out=True) from None
    except KeyboardInterrupt:
        raise
    except StageError as exc:
        raise StageError(exc.message, who, timed_out=exc.timed_out) from None
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin is a plugin failure too
        raise StageError(f"{type(exc).__name__}: {exc}", who) from exc
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            _alarm_armed = False


def check_images(out: Any, like: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise StageError(f"{who} returned {type(out).__name__}, expected a torch.Tensor")
    if tuple(out.shape) != tuple(like.shape):
        raise StageError(f"{who} returned shape {tuple(out.shape)}, expected {tuple(like.shape)}")
    if not out.is_floating_point():
        raise StageError(f"{who} returned dtype {out.dtype}, expected a float tensor in [0, 1]")
    if not torch.isfinite(out).all():
        raise StageError(f"{who} returned NaN or infinite values")
    lo, hi = float(out.min()), float(out.max())
    if lo < -TOLERANCE or hi > 1 + TOLERANCE:
        raise StageError(f"{who} returned values in [{lo:.3g}, {hi:.3g}], expected [0, 1]")
    return out


def check_scores(out: Any, n: int, who: str, *, probability: bool, unit_norm: bool = False) -> np.ndarray:
    if not isinstance(out, torch.Tensor):
        raise StageError(f"{who} returned {type(out).__name__}, expected a torch.Tensor")
    arr = out.detach().float().cpu().numpy()
    if probability and arr.shape != (n,):
        raise StageError(f"{who} returned shape {arr.shape}, expected ({n},)")
    if not probability and (arr.ndim != 2 or arr.shape[0] != n):
        raise StageError(f"{who} returned shape {arr.shape}, expected ({n}, D)")
    if not np.isfinite(arr).all():
        raise StageError(f"{who} returned NaN or infinite values")
    if probability and (arr.min() < -TOLERANCE or arr.max() > 1 + TOLERANCE):
        raise StageError(f"{who} returned probabilities outside [0, 1]")
    if unit_norm and not np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-2):
        raise StageError(f"{who} returned embeddings that are not L2-normalised")
    return np.clip(arr, 0, 1) if probability else arr
