"""A content-addressed on-disk cache of stage outputs, safe to share between runs.

Every entry is addressed by a hash of everything that determines it (plugin
name, version, options, model hashes, input fingerprint, seed). Entries are
written to a temporary file in the entry's own folder and renamed, so a run
killed at any moment leaves either a complete entry or none, and a re-run
skips whatever is finished. The rename is also what makes the cache a meeting
point: two runs (or many workers) writing the same key each rename a complete
file over the path, so one complete entry wins and a reader, which opens the
path once and reads it whole, never sees half of one.

Renames protect against a writer that dies; they do not protect against a
disk, a copy or a person that changes bytes later. So every entry carries a
checksum: a file is a header, the payload, and a fixed-size trailer with the
payload's length and the sha256 of the entry's name and payload. A truncated,
flipped or edited entry (or one copied under another key) fails the check, is
counted as rejected, warned about in one line, and recomputed, never used.
Entries written before checksums existed have no header; they are misses too.

A writer killed between writing and renaming leaves its temporary file behind.
Its name carries the writer's host and pid, so the next write into that folder
removes it once that process is gone (or, for another host's files, once it is
an hour old).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import struct
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # torch is imported where states are read or written: results.py and locks need no torch
    import torch

HEADER = b"SBPETC1\n"  # marks an entry with a checksum; older entries lack it
TRAILER = struct.Struct("<Q32s8s")  # payload length, sha256 digest, end marker
TRAILER_END = b"\nSBPETC1"
STALE_AFTER_S = 3600.0  # another host's temporary file this old is abandoned (no write takes an hour)
DEAD_WRITER_GRACE_S = 10.0  # a dead local writer's file is left this long (margin for a file server's clock)

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


class CacheWarning(UserWarning):
    """A cache entry failed its checksum (or predates checksums) and is recomputed."""


def stable_hash(*parts: Any) -> str:
    """A short sha256 of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}.{os.getpid()}."


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# --------------------------------------------------------------------------- sealed entries


def _digest(label: str, payload: bytes) -> bytes:
    h = hashlib.sha256(label.encode() + b"\0")
    h.update(payload)
    return h.digest()


def seal(label: str, payload: bytes) -> bytes:
    """``payload`` framed as an entry: header, payload, trailer (length, sha256 of label + payload)."""
    return HEADER + payload + TRAILER.pack(len(payload), _digest(label, payload), TRAILER_END)


def unseal(label: str, blob: bytes) -> tuple[bytes | None, str]:
    """The payload of a sealed entry, or ``None`` and why it cannot be trusted."""
    if len(blob) < len(HEADER):
        return None, f"truncated ({len(blob)} bytes)"
    if not blob.startswith(HEADER):
        return None, "old"
    if len(blob) < len(HEADER) + TRAILER.size:
        return None, f"truncated ({len(blob)} bytes)"
    length, digest, end = TRAILER.unpack(blob[-TRAILER.size:])
    payload = blob[len(HEADER):-TRAILER.size]
    if end != TRAILER_END or length != len(payload):
        return None, f"truncated or extended ({len(payload)} payload bytes, trailer missing or says {length})"
    if _digest(label, payload) != digest:
        return None, "checksum mismatch (bytes changed after writing, or copied from another key)"
    return payload, ""


def _writer_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def is_stale_temp(path: Path, now: float | None = None, *, stale_after: float = STALE_AFTER_S,
                  grace: float = DEAD_WRITER_GRACE_S) -> bool:
    """Whether ``path`` is a temporary file left by a writer that will never rename it."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > stale_after:
        return True
    match = _TEMP_NAME.match(path.name)
    if match is None or match["host"] != _HOST:
        return False  # an unknown or remote writer: only age tells
    pid = int(match["pid"])
    return pid != os.getpid() and age > grace and _writer_gone(pid)


def remove_stale_temps(folder: Path, **kw: float) -> int:
    """Delete the abandoned temporary files in ``folder`` (not recursive); returns how many."""
    removed = 0
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
    except FileNotFoundError:
        return 0
    now = time.time()
    for name in names:
        path = Path(folder) / name
        if is_stale_temp(path, now, **kw):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:  # another cleaner was first
                pass
    return removed


def _warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=5)


# --------------------------------------------------------------------------- the cache


class Cache:
    """Arrays, small JSON documents and state dicts under ``root/<kind>/<key[:2]>/<key>``.

    ``warn`` receives one line per rejected entry (default: a :class:`CacheWarning`).
    ``hits`` / ``misses`` count every read; ``rejected`` counts the misses whose entry
    existed but failed its checksum or predates checksums.
    """

    def __init__(self, root: str | Path, refresh: bool = False, warn: Callable[[str], None] | None = None,
                 stale_after: float = STALE_AFTER_S, dead_writer_grace: float = DEAD_WRITER_GRACE_S):
        self.root = Path(root)
        self.refresh = refresh  # when True, reads miss (everything is recomputed) but writes still land
        self.warn = warn or _warn
        self.stale_after, self.dead_writer_grace = stale_after, dead_writer_grace
        self.hits = 0
        self.misses = 0
        self.rejected = 0
        self.stale_removed = 0
        self._old_entries = 0
        self._swept: set[Path] = set()

    def stats(self) -> dict[str, int]:
        """The counts for results.json's ``cache`` section."""
        return {"hits": self.hits, "misses": self.misses, "rejected": self.rejected, "stale_removed": self.stale_removed}

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    # ---- reading and writing sealed payloads

    def _load(self, kind: str, key: str, suffix: str, decode: Callable[[bytes], Any]) -> Any | None:
        """The decoded, verified entry, or ``None`` (a miss; a warning too when an entry was there but untrustworthy)."""
        path = self._path(kind, key, suffix)
        if self.refresh:
            self.misses += 1
            return None
        try:
            with open(path, "rb") as fh:  # one open and a whole read: a concurrent rename cannot mix two entries
                blob = fh.read()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:
            return self._reject(path, f"unreadable ({exc})")
        payload, why = unseal(f"{kind}/{key}{suffix}", blob)
        if payload is None:
            return self._reject(path, why)
        try:
            value = decode(payload)
        except Exception as exc:  # noqa: BLE001 - sealed but undecodable (a buggy writer): recompute, never raise
            return self._reject(path, f"not decodable ({type(exc).__name__}: {exc})")
        self.hits += 1
        return value

    def _reject(self, path: Path, why: str) -> None:
        self.misses += 1
        self.rejected += 1
        if why == "old":  # many at once after an upgrade: say it once
            self._old_entries += 1
            if self._old_entries == 1:
                self.warn(f"cache {self.root}: entries without a checksum (written by an older sbpet) are recomputed")
            return None
        self.warn(f"cache entry {path} is {why}; recomputing it")
        return None

    def _write(self, kind: str, key: str, suffix: str, payload: bytes) -> Path:
        path = self._path(kind, key, suffix)
        if path.parent not in self._swept:  # once per folder and run: a killed writer's leftovers go
            self._swept.add(path.parent)
            self.stale_removed += remove_stale_temps(path.parent, stale_after=self.stale_after, grace=self.dead_writer_grace)
        atomic_write_bytes(path, seal(f"{kind}/{key}{suffix}", payload))
        return path

    def sweep(self) -> int:
        """Remove abandoned temporary files under the whole cache (e.g. before a long run); returns how many."""
        removed = 0
        for folder, _, _ in os.walk(self.root):
            removed += remove_stale_temps(Path(folder), stale_after=self.stale_after, grace=self.dead_writer_grace)
        self.stale_removed += removed
        return removed

    # ---- the typed entries

    def get_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        def decode(payload: bytes) -> dict[str, np.ndarray]:
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}

        return self._load(kind, key, ".npz", decode)

    def put_arrays(self, kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self._write(kind, key, ".npz", buf.getvalue())

    def get_json(self, kind: str, key: str) -> Any | None:
        return self._load(kind, key, ".json", lambda payload: json.loads(payload.decode()))

    def put_json(self, kind: str, key: str, value: Any) -> None:
        self._write(kind, key, ".json", json.dumps(value).encode())

    def get_state(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        """A fitted state, or ``None`` (absent or damaged): the caller fits again rather than run half-loaded."""
        import torch

        return self._load(kind, key, ".pt",
                          lambda payload: torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))

    def put_state(self, kind: str, key: str, state: Mapping[str, torch.Tensor]) -> Path:
        import torch

        buf = io.BytesIO()
        torch.save({k: (v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in state.items()}, buf)
        return self._write(kind, key, ".pt", buf.getvalue())

    def work_dir(self, key: str) -> Path:
        path = self.root / "work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    SUFFIXES = {"fit": ".pt", "images": ".npz", "scores": ".npz"}

    def contains(self, kind: str, key: str) -> bool:
        """Whether a framed entry is present: header and trailer are read, the checksum is not (for planning
        only; reads still verify, so a damaged entry planned as cached is recomputed when read)."""
        if self.refresh:
            return False
        path = self._path(kind, key, self.SUFFIXES.get(kind, ".json"))
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(HEADER))
                size = fh.seek(0, os.SEEK_END)
                if head != HEADER or size < len(HEADER) + TRAILER.size:
                    return False
                fh.seek(size - TRAILER.size)
                length, _, end = TRAILER.unpack(fh.read(TRAILER.size))
        except OSError:
            return False
        return end == TRAILER_END and length == size - len(HEADER) - TRAILER.size
