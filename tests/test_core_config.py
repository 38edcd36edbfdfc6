"""Options, benchmark definitions and the command line's error messages."""

import subprocess
import sys

import pytest

from sbpet_bench.api import Option
from sbpet_bench.config import ConfigError, build_config, load_benchmark, parse_option_flags, parse_per_class


def test_option_parsing_converts_and_rejects():
    assert Option(3.0).parse("2") == 2.0
    assert Option(8).parse("4") == 4
    assert Option(True).parse("off") is False
    assert Option("pixel", choices=("pixel", "latent")).parse("latent") == "latent"
    with pytest.raises(ValueError, match="expected one of pixel, latent"):
        Option("pixel", choices=("pixel", "latent")).parse("gan")
    with pytest.raises(ValueError):
        Option(8).parse("four")
    with pytest.raises(ValueError, match="finite"):
        Option(1.0).parse("nan")


def test_benchmark_file_and_flag_overrides(tmp_path):
    bench = tmp_path / "b.toml"
    bench.write_text('name = "t"\ndata = "somewhere"\npets = ["blur", "noise"]\nper_class = 50\n'
                     '[options]\n"blur.sigma" = 2.5\n')
    cfg = build_config(load_benchmark(bench), {"per_class": 10, "options": parse_option_flags(["noise.sigma=0.3"])})
    assert build_config(load_benchmark(bench), {"per_class": None}).per_class is None  # "all"
    assert cfg.pets == ["blur", "noise"] and cfg.per_class == 10 and cfg.data == "somewhere"
    assert cfg.plugin_options() == {"blur": {"sigma": 2.5}, "noise": {"sigma": "0.3"}}
    bad = tmp_path / "bad.toml"
    bad.write_text('data = "x"\npetz = ["blur"]\n')
    with pytest.raises(ConfigError, match="unknown key\\(s\\) petz"):
        load_benchmark(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_benchmark(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="PLUGIN.OPTION=VALUE"):
        parse_option_flags(["blur"])
    assert parse_per_class("all") is None
    with pytest.raises(ConfigError, match="positive integer or 'all'"):
        parse_per_class("-3")


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).parent.parent.glob("benchmarks/*.toml")))
def test_shipped_benchmark_definitions_load(path):
    raw = load_benchmark(path)
    assert raw.get("pets"), f"{path.name} names no PETs"


def test_cli_errors_are_specific_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sbpet_bench.cli", "run", "--pets", "blur", "--data", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--data" in proc.stderr and "no such folder" in proc.stderr
    # an existing, non-empty folder passes the cheap --data check, so the name is what is refused
    (tmp_path / "notes.txt").write_text("not a data set")
    proc = subprocess.run([sys.executable, "-m", "sbpet_bench.cli", "run", "--pets", "pridss-typo", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown pet 'pridss-typo'" in proc.stderr and "blur" in proc.stderr


def test_plugin_lists_split_outside_brackets():
    from sbpet_bench.config import split_names
    from sbpet_bench.pipeline import parse_spec

    assert split_names("pridss[m=5,poisson=0],blur, noise") == ["pridss[m=5,poisson=0]", "blur", "noise"]
    assert parse_spec("pridss[m=5,poisson=0]") == ("pridss", {"m": "5", "poisson": "0"})
    with pytest.raises(ConfigError, match="option=value"):
        parse_spec("pridss[m]")
