"""Every flag and benchmark key is checked before any data is read: exit 2, an `error:` line naming it, no traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbpet_bench import cli
from sbpet_bench.api import Option
from sbpet_bench.config import ConfigError, build_config, load_benchmark

SYNTAX_ERROR = "def broken(:\n    pass\n"


@pytest.fixture
def nowhere(tmp_path) -> str:
    """A --data folder that exists but holds no data set: a run that got as far as reading data would say so instead.

    It exists because a missing --data is answered first of all (before the plugins load, see
    test_missing_data_is_answered_before_torch_loads); every other check must still come before the data's layout.
    """
    folder = tmp_path / "not-a-data-set"
    folder.mkdir()
    (folder / "notes.txt").write_text("no faces here\n")
    return str(folder)


def _invoke(args: list[str]):
    return CliRunner().invoke(cli.app, args)


def _assert_user_error(result, *fragments: str) -> None:
    output = result.output
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert error_lines, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)
    assert "recognises this layout" not in output  # the check came before the data


def _read_only_folder(tmp_path: Path) -> str:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    for candidate in (folder, Path("/sys")):  # root ignores permission bits; sysfs refuses new files even to root
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return str(candidate / "sbpet-out")
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no read-only folder available to this user")


FLAG_CASES = [
    (["--seed", "-1"], "--seed"),
    (["--image-size", "-5"], "--image-size"),
    (["--image-size", "0"], "--image-size"),
    (["--bootstrap", "-1"], "--bootstrap"),
    (["--train-per-class", "-1"], "--train-per-class"),
    (["--pool-per-class", "-7"], "--pool-per-class"),
    (["--samples", "-3"], "--samples"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-per-identity", "-1"], "--max-per-identity"),
    (["--per-class", "0"], "--per-class"),
    (["--device", "gpu"], "--device"),
    (["--plugin-timeout", "0"], "--plugin-timeout"),
    (["--executor", "spark"], "--executor"),
    (["--split", "train"], "--split"),
    (["--shard-size", "0"], "--shard-size"),
    (["--informed-per-class", "0"], "--informed-per-class"),
    (["--ray-workers", "0"], "--ray-workers"),
    (["-o", "blur.sigma=-5"], "blur.sigma"),
    (["-o", "pixelate.block=0"], "pixelate.block"),
    (["-o", "noise.sigma=-0.1"], "noise.sigma"),
]


@pytest.mark.parametrize("args, named", FLAG_CASES, ids=[" ".join(a) for a, _ in FLAG_CASES])
def test_bad_flags_are_named(args, named, nowhere):
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", nowhere, *args]), named)


def test_out_that_is_a_file_or_read_only(tmp_path, nowhere):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", nowhere, "--out", str(a_file)]), "--out", "is a file")
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", nowhere, "--out", str(a_file / "sub")]), "--out")
    locked = _read_only_folder(tmp_path)
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", nowhere, "--out", locked]), "--out", "cannot write")
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", nowhere, "--cache-dir", locked]), "--cache-dir")


def test_plugin_file_with_a_syntax_error(tmp_path, nowhere):
    bad = tmp_path / "my_pet.py"
    bad.write_text(SYNTAX_ERROR)
    result = _invoke(["run", "--pets", "blur", "--data", nowhere, "--plugin", str(bad)])
    _assert_user_error(result, "--plugin", "my_pet.py", "syntax error at line 1")
    _assert_user_error(_invoke(["list", "--plugin", str(bad)]), "--plugin", "syntax error")
    crashing = tmp_path / "crash_pet.py"
    crashing.write_text("raise RuntimeError('broken at import')\n")
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", nowhere, "--plugin", str(crashing)]),
                       "--plugin", "broken at import")


TOML_CASES = [
    ('seed = "zero"', "'seed'"),
    ('batch_size = "64"', "'batch_size'"),
    ("pets = 5", "'pets'"),
    ("data = 42", "'data'"),
    ("device = 3", "'device'"),
    ("samples = -3", "'samples'"),
    ('quiet = "no"', "'quiet'"),
    ("per_class = 2.5", "'per_class'"),
    ("plugin_timeout = -1", "'plugin_timeout'"),
    ('executor = "spark"', "'executor'"),
    ("informed = 1", "'informed'"),
    ('name = 3', "'name'"),
    ('[options]\n"blur.sigma" = -5', "blur.sigma"),
    ('[options]\n"blur.sigma" = [1, 2]', "blur.sigma"),
]


@pytest.mark.parametrize("line, named", TOML_CASES, ids=[c for c, _ in TOML_CASES])
def test_bad_benchmark_keys_are_named(tmp_path, nowhere, line, named):
    defaults = {"pets": 'pets = ["blur"]', "data": f'data = "{nowhere}"'}
    key = line.split("=")[0].strip()
    lines = [v for k, v in defaults.items() if k != key]
    bench = tmp_path / "bench.toml"
    bench.write_text("\n".join([*lines, line]) + "\n" if line.startswith("[") else "\n".join([line, *lines]) + "\n")
    _assert_user_error(_invoke(["run", str(bench)]), named, *(() if named == "blur.sigma" else ("bench.toml",)))


def test_benchmark_file_that_is_binary_or_a_folder(tmp_path):
    binary = tmp_path / "bench.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
    _assert_user_error(_invoke(["run", str(binary)]), "bench.toml", "not a text file")
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    _assert_user_error(_invoke(["run", str(folder)]), "folder.toml", "is a folder")


def test_no_traceback_in_a_real_process(tmp_path):
    bench = tmp_path / "b.toml"
    bench.write_text('data = "x"\npets = ["blur"]\nseed = "zero"\n')
    proc = subprocess.run([sys.executable, "-m", "sbpet_bench.cli", "run", str(bench)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: benchmark file") and "'seed'" in proc.stderr


MISSING_DATA_PROBE = """
import sys
sys.argv = ["sbpet", "run", "--pets", "blur", "--classifiers", "no-such-classifier", "--data", sys.argv[1], "--out", sys.argv[2]]
from sbpet_bench.cli import app
try:
    app()
except SystemExit as exc:
    print("exit", exc.code, "torch" in sys.modules, "sbpet_bench.plugins" in sys.modules)
"""


def test_missing_data_is_answered_before_torch_loads(tmp_path):
    """A mistyped --data is answered from the flags alone: no plugin module (nor torch) is imported first."""
    proc = subprocess.run([sys.executable, "-c", MISSING_DATA_PROBE, str(tmp_path / "no" / "such"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["exit", "2", "False", "False"], (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: --data ") and "no such folder or file" in proc.stderr


def test_data_that_is_empty_or_unreadable(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", str(empty)]), "--data", "the folder is empty")
    manifest = tmp_path / "faces.csv"
    manifest.write_text("")
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", str(manifest)]), "--data", "the file is empty")
    manifest.write_text("path,gender\n")
    _assert_user_error(_invoke(["run", "--pets", "blur", "--data", str(manifest), "--train-data", str(tmp_path / "gone")]),
                       "--train-data", "no such folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.jpg").write_bytes(b"x")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):  # root reads it anyway
            pytest.skip("permission bits do not apply to this user")
        _assert_user_error(_invoke(["run", "--pets", "blur", "--data", str(locked)]), "--data", "cannot read it")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_unknown_layout_is_named_after_the_names(tmp_path, nowhere):
    result = _invoke(["run", "--pets", "blur", "--data", nowhere])
    assert result.exit_code == 2 and "no dataset source recognises this layout" in result.output, result.output
    result = _invoke(["run", "--pets", "blurr", "--data", nowhere])
    assert result.exit_code == 2 and "unknown pet 'blurr'" in result.output, result.output


def test_help_shows_defaults_and_what_flags_do():
    text = " ".join(CliRunner().invoke(cli.app, ["run", "--help"], env={"COLUMNS": "1000"}).output.split())
    # brackets survive rich's markup; the flags say what they do
    for fragment in ("Evaluation images per gender", "[default: 500]", "blur[sigma=3]", "privacy-utility plot and equal-privacy "
                     "table use (default: the worst case", "faceapi-gender, hm-faceres-gender and hm-gear",
                     "Fits, protects and scores nothing", "(default: --batch-size)"):
        assert fragment in text, fragment
    assert "record attribute" not in text and "faceapi-gender if present" not in text


def test_trust_pickle_is_gone():
    result = _invoke(["run", "--trust-pickle", "--pets", "blur", "--data", "x"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_good_values_and_new_run_settings(tmp_path, monkeypatch):
    bench = tmp_path / "b.toml"
    bench.write_text('data = "d"\npets = "blur,noise"\nplugin_timeout = 60\nexecutor = "ray"\nsplit = "dev"\n'
                     'informed = false\nshard_size = 128\nalign = "dlib"\nquiet = true\n[options.blur]\nsigma = 2\n')
    cfg = build_config(load_benchmark(bench), {"seed": 7, "out": str(tmp_path / "out")})
    assert (cfg.pets, cfg.plugin_timeout, cfg.executor, cfg.split, cfg.informed, cfg.shard_size, cfg.align, cfg.quiet) == \
           (["blur", "noise"], 60.0, "ray", "dev", False, 128, "dlib", True)
    assert cfg.options == {"blur.sigma": 2} and cfg.seed == 7 and not (tmp_path / "out").exists()  # checked, not created
    seen = {}
    monkeypatch.setattr("sbpet_bench.pipeline.run", lambda cfg, argv=None, registry=None: seen.setdefault("cfg", cfg))
    for name in ("d", "t"):  # --data and --train-data must exist (checked before the pipeline is called)
        (tmp_path / name).mkdir()
        (tmp_path / name / "faces.csv").write_text("path,gender\n")
    monkeypatch.chdir(tmp_path)
    result = _invoke(["run", "--pets", "blur", "--data", "d", "--out", str(tmp_path / "o"), "--align", "dlib",
                      "--train-data", "t", "--plugin-timeout", "5", "--dry-run", "--executor", "ray", "--ray-address", "auto",
                      "--shard-size", "32", "--privacy-by", "faceapi-gender", "--split", "dev", "--no-informed",
                      "--informed-per-class", "50", "--informed-classifiers", "hog-logreg", "--ray-workers", "2"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.align, cfg.train_data, cfg.plugin_timeout, cfg.dry_run, cfg.executor, cfg.ray_address, cfg.shard_size,
            cfg.privacy_by, cfg.split, cfg.informed, cfg.informed_per_class, cfg.informed_classifiers, cfg.ray_workers) == \
           ("dlib", "t", 5.0, True, "ray", "auto", 32, "faceapi-gender", "dev", False, 50, ["hog-logreg"], 2)
    with pytest.raises(ConfigError, match="'seed'"):
        build_config({"data": "d", "seed": True}, {})  # a bool is not a seed


def test_option_ranges():
    assert Option(3.0, min=0.0).parse("0") == 0.0
    with pytest.raises(ValueError, match="at least 0"):
        Option(3.0, min=0.0).parse("-5")
    with pytest.raises(ValueError, match="at most 10"):
        Option(1, min=1, max=10).parse(11)
    assert Option(True, min=0).parse("off") is False  # ranges apply to numbers only
