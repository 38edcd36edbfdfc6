"""One writer per output folder: an advisory lock on ``<out>/.lock`` held while a run writes there.

Two runs writing the same ``--out`` would interleave samples, diagnostics and
results.json from different configurations. The cache is shared on purpose;
an output folder is not. The lock is ``flock`` on a file in the folder, so the
kernel releases it when its holder exits or is killed: there is never a stale
lock to delete by hand. The file also records who holds it (pid, host, start,
command), so a refused run can say whom it is waiting for. (On NFS, Linux maps
``flock`` onto byte-range locks that the server tracks, so this holds across
machines sharing the folder.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .config import ConfigError

LOCK_NAME = ".lock"
POLL_S = 0.2

# Locks this process holds, by folder: a nested out_lock of the same folder (e.g. the report
# writer inside a run) must not refuse its own process.
_held: dict[Path, list[Any]] = {}
_held_guard = threading.Lock()


class OutputLocked(ConfigError):
    """Another run is writing this output folder."""

    def __init__(self, folder: Path, holder: dict[str, Any]):
        self.folder, self.holder = folder, holder
        super().__init__(f"{folder}: another sbpet run is writing this output folder ({describe_holder(holder)}). "
                         "Wait for it to finish, or pass a different --out.")


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "holder unknown: it is still writing its details"
    text = f"pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
    if holder.get("command"):
        text += f": {' '.join(map(str, holder['command']))}"
    return text


def read_holder(folder: str | Path) -> dict[str, Any]:
    """Who holds (or last held) the lock on ``folder``; ``{}`` when nobody wrote their details."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextmanager
def out_lock(folder: str | Path, *, wait: float = 0.0, command: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Hold ``<folder>/.lock`` for the block (creating the folder); yields the holder details written.

    Raises :class:`OutputLocked` naming the folder and its holder if another process holds it
    for longer than ``wait`` seconds (default: refuse at once).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _held_guard:
        if key in _held:  # already ours: re-enter
            _held[key][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield _held[key][2]
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return

    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutputLocked(folder, read_holder(folder)) from None
                time.sleep(POLL_S)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": list(command if command is not None else sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        with _held_guard:
            _held[key] = [fd, 1, holder]
        try:
            yield holder
        finally:
            with _held_guard:
                del _held[key]
            os.ftruncate(fd, 0)  # released: nobody's details stay behind
    finally:
        os.close(fd)  # closing drops the flock
