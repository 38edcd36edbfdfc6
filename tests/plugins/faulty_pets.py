"""PETs that misbehave on purpose, for testing how the harness reports failures."""

import sys
import time

import torch

from sbpet_bench import hookimpl
from sbpet_bench.api import PET, Dependency, GenderClassifier, ProtectResult


class NanPet(PET):
    name = "nan-pet"

    def protect(self, batch):
        out = batch.images.clone()
        out[0, 0, 0, 0] = float("nan")
        return ProtectResult(out)


class LateCrash(PET):
    name = "late-crash"

    def __init__(self, options, context):
        super().__init__(options, context)
        self.calls = 0

    def protect(self, batch):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom on the second batch")
        return ProtectResult(batch.images.clone())


class NeedsMissingModule(PET):
    name = "needs-missing-module"
    requires = ("no_such_module_xyz",)

    def protect(self, batch):
        return ProtectResult(batch.images)


class WrongShape(PET):
    name = "wrong-shape"

    def protect(self, batch):
        return ProtectResult(batch.images[:, :, :-1])


class Hangs(PET):
    name = "hangs"

    def protect(self, batch):
        while True:  # never returns
            time.sleep(0.05)


class Exits(PET):
    name = "exits"

    def protect(self, batch):
        sys.exit(3)


class Sneaky(PET):
    """Declares a verifier but not the classifier it would like to use."""

    name = "sneaky"

    @classmethod
    def dependencies(cls, options):
        return [Dependency("verifier", "pca-pixels")]

    def protect(self, batch):
        return ProtectResult(batch.images.clone())


class NanClassifier(GenderClassifier):
    name = "nan-classifier"

    def predict_male(self, images):
        return torch.full((images.shape[0],), float("nan"))


class Diagnosing(PET):
    """Returns one diagnostics dict per image (for the completeness of diagnostics.jsonl)."""

    name = "diagnosing"

    def protect(self, batch):
        return ProtectResult(batch.images.clone(), [{"row_id": i} for i in batch.ids])


@hookimpl
def sbpet_register_pets():
    return [NanPet, LateCrash, NeedsMissingModule, WrongShape, Hangs, Exits, Sneaky, Diagnosing]


@hookimpl
def sbpet_register_classifiers():
    return [NanClassifier]
