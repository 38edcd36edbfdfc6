"""Baseline PETs: the reference rows every leaderboard needs."""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_pets():
    from .pets import Blur, Identity, Noise, Pixelate

    return [Identity, Blur, Pixelate, Noise]
