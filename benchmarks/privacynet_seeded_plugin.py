"""``privacynet-seeded``: PrivacyNet with its training seed as an option, for measuring the spread over seeds.

PrivacyNet takes its seed from the run (``--seed``), which also draws the evaluation sample and the
splits; this PET trains with ``seed`` instead, so several trainings are scored on the same faces.
Its own name keeps it out of ``privacynet``'s cache entries. Load it with
``--plugin benchmarks/privacynet_seeded_plugin.py`` (benchmarks/privacynet_seeds.py does).
"""

from __future__ import annotations

import dataclasses

from sbpet_bench import hookimpl
from sbpet_bench.api import Option
from sbpet_privacynet.plugin import PrivacyNet
from sbpet_privacynet.training import TrainConfig


class PrivacyNetSeeded(PrivacyNet):
    name = "privacynet-seeded"
    description = "PrivacyNet trained with the seed given by option seed (the run's seed still draws the faces)"
    options = {**PrivacyNet.options, "seed": Option(0, "training seed: initial weights, batches, codes and views")}

    def train_config(self) -> TrainConfig:
        return dataclasses.replace(super().train_config(), seed=int(self.opts["seed"]))


@hookimpl
def sbpet_register_pets():
    return [PrivacyNetSeeded]
