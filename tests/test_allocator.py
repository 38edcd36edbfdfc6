"""The heap top pad that sbpet run sets (allocator.py): taken by glibc, set once, a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from sbpet_bench import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_top_pad_once(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    calls = []
    real = allocator.ctypes.CDLL

    def counting(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(allocator.ctypes, "CDLL", counting)
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True
    assert len(calls) == 1  # the second call finds it done


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("no libc call off glibc"))
    assert allocator.keep_freed_memory() is False
