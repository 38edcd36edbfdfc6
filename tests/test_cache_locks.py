"""One writer per output folder: a second run is refused with the holder named; a dead holder frees it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sbpet_bench.config import ConfigError
from sbpet_bench.locks import OutputLocked, out_lock, read_holder

REPO = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent("""
    import sys, time
    from sbpet_bench.locks import out_lock

    with out_lock(sys.argv[1], command=["sbpet", "run", "--out", sys.argv[1]]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(tmp_path: Path, folder: Path, seconds: float) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(folder), str(seconds)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_naming_folder_and_holder(tmp_path):
    out = tmp_path / "runs" / "latest"
    proc = _hold(tmp_path, out, 120)
    try:
        with pytest.raises(OutputLocked) as caught:
            with out_lock(out):
                pytest.fail("the lock was granted twice")
        message = str(caught.value)
        assert str(out) in message and f"pid {proc.pid}" in message and "sbpet run --out" in message
        assert "different --out" in message and isinstance(caught.value, ConfigError)  # the CLI prints it, no traceback
        assert read_holder(out)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # The kernel released the dead holder's lock: no stale lock to delete by hand.
    with out_lock(out) as holder:
        assert holder["pid"] == os.getpid() and read_holder(out)["pid"] == os.getpid()
    assert read_holder(out) == {}  # released: nobody's details stay behind


def test_wait_takes_the_lock_when_the_holder_finishes(tmp_path):
    out = tmp_path / "out"
    proc = _hold(tmp_path, out, 1.5)
    start = time.monotonic()
    with pytest.raises(OutputLocked):
        with out_lock(out, wait=0.3):
            pass
    with out_lock(out, wait=60):
        assert proc.wait(timeout=30) == 0
    assert time.monotonic() - start < 60


def test_the_same_process_may_nest_its_own_lock(tmp_path):
    with out_lock(tmp_path / "out") as outer:
        with out_lock(tmp_path / "out") as inner:
            assert inner is outer
        assert read_holder(tmp_path / "out")["pid"] == os.getpid()  # still held by the outer block
    assert read_holder(tmp_path / "out") == {}
