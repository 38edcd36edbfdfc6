"""sha256 of files' bytes, remembered on disk so that a large data set is hashed once.

A data set's fingerprint must follow its contents, not its modification times (a copy, a checkout or
an unpacked archive has new times but the same images). Hashing 13k files on every run would cost
seconds, so each digest is remembered with the file's (size, mtime_ns, ctime_ns): while those are
unchanged the stored digest is used. One small JSON memo per data folder lives under the memo folder
(``$SBPET_HOME/hashes`` by default); it is replaced atomically, so concurrent runs can only lose each
other's additions (recomputed next time), never read a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterable

MEMO_VERSION = 1
# A file modified within this many seconds of being hashed may change again within the same mtime tick
# (coarse file-system clocks), so its digest is used but not remembered (git's "racy" rule).
_RACY_SECONDS = 2.0


def default_memo_dir() -> Path:
    """``$SBPET_HOME/hashes``, else ``$XDG_CACHE_HOME/sbpet/hashes``, else ``~/.cache/sbpet/hashes``."""
    if os.environ.get("SBPET_HOME"):
        return Path(os.environ["SBPET_HOME"]).expanduser() / "hashes"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sbpet" / "hashes"


def _memo_file(memo_dir: Path, root: str) -> Path:
    return memo_dir / f"{hashlib.sha256(os.fsencode(root)).hexdigest()[:24]}.json"


def _load(file: Path) -> dict[str, list]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or unreadable memo: everything is simply hashed again
    return raw.get("files", {}) if isinstance(raw, dict) and raw.get("version") == MEMO_VERSION else {}


def _save(file: Path, root: str, entries: dict[str, list]) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        merged = _load(file) | entries  # keep what a concurrent run added since we read the memo
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": MEMO_VERSION, "root": os.fsencode(root).decode("utf-8", "backslashreplace"),
                       "files": merged}, fh)
        os.replace(tmp, file)
    except OSError:
        pass  # a read-only home costs time on the next run, not correctness


def file_digests(paths: Iterable[str], memo_dir: Path | None = None) -> dict[str, str]:
    """Map each path to the sha256 of its bytes ("missing" or "not-a-file" when it cannot be hashed)."""
    paths = list(paths)
    if not paths:
        return {}
    memo_dir = Path(memo_dir) if memo_dir is not None else default_memo_dir()
    cwd = os.getcwd()  # once: abspath() would ask the kernel for it per file
    absolute = [os.path.normpath(os.path.join(cwd, p)) for p in paths]
    root = os.path.commonpath(absolute)
    root = root if os.path.isdir(root) else os.path.dirname(root)
    memo_path = _memo_file(memo_dir, root)
    memo = _load(memo_path)
    fresh: dict[str, list] = {}
    now = time.time()
    out: dict[str, str] = {}
    cut = len(root.rstrip(os.sep)) + 1
    for path, full in zip(paths, absolute):
        try:
            st = os.stat(path)
        except OSError:
            out[path] = "missing"
            continue
        if not stat.S_ISREG(st.st_mode):
            out[path] = "not-a-file"  # never open a FIFO or device
            continue
        key = full[cut:]  # relative to the memo's root; json escapes a non-UTF-8 name's surrogates exactly
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        known = memo.get(key)
        if known is not None and known[:3] == stamp:
            out[path] = known[3]
            continue
        try:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            out[path] = "missing"
            continue
        out[path] = digest
        if now - st.st_mtime_ns / 1e9 > _RACY_SECONDS:
            fresh[key] = stamp + [digest]
    if fresh:
        _save(memo_path, root, fresh)
    return out
