"""The model store: sources, checksums, atomic writes, error messages and the `sbpet models` commands."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbpet_bench import model_sources, models_cli, modelstore
from sbpet_bench.api import Asset
from sbpet_bench.modelstore import ModelStore, ModelStoreError

PAYLOAD = b"weights " * 1000


def make_asset(name: str = "toy", data: bytes = PAYLOAD, sources: tuple[str, ...] = (), **kw) -> Asset:
    return Asset(name=name, filename=f"sub/{name}.bin", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                 licence="MIT", sources=sources, **kw)


def leftovers(home: Path) -> list[str]:
    """Files in the store besides its verification memo (partial downloads would show here)."""
    return sorted(p.name for p in home.rglob("*") if p.is_file() and not p.name.startswith(modelstore.MEMO_NAME))


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
    assert "size mismatch" in message and "file:///nonexistent/weights.bin" in message and served.as_uri() in message
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
    tarball = _tarball({"package/model/a.bin": b"A" * 10, "package/model/b.bin": b"B" * 20})
    pin = hashlib.sha256(tarball).hexdigest()

    def fake_run(cmd, cwd=None, **_):  # stands in for `npm pack --json --ignore-scripts <spec>`
        calls.append(cmd)
        Path(cwd, "scope-pkg-1.0.0.tgz").write_bytes(tarball)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps([{"filename": "scope-pkg-1.0.0.tgz"}]), stderr="")

    monkeypatch.setattr(model_sources.shutil, "which", lambda _: "/usr/bin/npm")
    monkeypatch.setattr(model_sources.subprocess, "run", fake_run)
    assets = {n: make_asset(n, data, (f"npm:@scope/pkg@1.0.0:model/{n}.bin#sha256={pin}",))
              for n, data in (("a", b"A" * 10), ("b", b"B" * 20))}
    store = ModelStore(tmp_path, assets)
    paths = store.fetch_many(["a", "b"])
    assert [p.read_bytes() for p in paths] == [b"A" * 10, b"B" * 20]
    assert len(calls) == 1 and calls[0][-1] == "@scope/pkg@1.0.0" and "--ignore-scripts" in calls[0]


def test_missing_member_and_malformed_sources_are_reported(tmp_path, monkeypatch):
    tarball = _tarball({"package/other.bin": b"x"})

    def fake_run(cmd, cwd=None, **_):
        Path(cwd, "p.tgz").write_bytes(tarball)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps([{"filename": "p.tgz"}]), stderr="")

    monkeypatch.setattr(model_sources.shutil, "which", lambda _: "/usr/bin/npm")
    monkeypatch.setattr(model_sources.subprocess, "run", fake_run)
    pin = hashlib.sha256(tarball).hexdigest()
    sources = (f"npm:p@1:model/x.bin#sha256={pin}", f"npm:no-version:x#sha256={pin}", "npm:p@1:model/x.bin", "ftp://host/x")
    store = ModelStore(tmp_path, {"x": make_asset("x", sources=sources)})
    with pytest.raises(ModelStoreError) as err:
        store.fetch("x")
    message = str(err.value)
    assert "has no file 'model/x.bin'" in message and "malformed source" in message and "unsupported source" in message
    assert "pins no sha256 for the npm archive" in message


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


def test_cli_list_fits_80_columns(tmp_path, served, monkeypatch):
    from sbpet_bench.plugins import load_registry

    assets = dict(load_registry().assets)  # the real declarations: long names, licences and descriptions
    assets["toy"] = make_asset(sources=(served.as_uri(),))
    store = ModelStore(tmp_path / "a-rather-long-folder-name-for-the-model-store" / "models", assets)
    store.fetch("toy")
    monkeypatch.setattr(models_cli, "_store", lambda: store)
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(models_cli.app, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    headers = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert set(assets) <= set(headers)
    assert "present" in headers["toy"] and "missing" in headers["deepface-gender-pth"]
    assert "    file: sub/toy.bin" in lines and "    licence: MIT" in lines
