"""PETs that misbehave on purpose, for testing how the harness reports failures."""

import torch

from sbpet_bench import hookimpl
from sbpet_bench.api import PET, ProtectResult


class NanPet(PET):
    name = "nan-pet"

    def protect(self, batch):
        out = batch.images.clone()
        out[0, 0, 0, 0] = float("nan")
        return ProtectResult(out)


class LateCrash(PET):
    name = "late-crash"

    def __init__(self, options=None, context=None):
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


@hookimpl
def sbpet_register_pets():
    return [NanPet, LateCrash, NeedsMissingModule, WrongShape]
