"""One forward pass for evaluators that run the same graph on the same images.

hm-faceres-gender and hm-faceres are two heads of one network: the harness scores every image set
with both, one after the other. :class:`LastBatch` remembers, per graph (model file, preprocessing,
outputs, device), the outputs of the last batch it ran on, keyed by a digest of the input's bytes;
the second evaluator then reuses them. Only inputs that autograd does not track are remembered (a
PET back-propagating through an evaluator gets its own graph every time), and each slot holds one
batch's outputs, never its images.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Hashable

import torch


def fingerprint(images: torch.Tensor) -> tuple:
    """Shape, dtype, device and a BLAKE2b digest of the values: equal only for equal inputs."""
    data = images.detach().to("cpu").contiguous()
    digest = hashlib.blake2b(data.view(torch.uint8).numpy().data if data.numel() else b"", digest_size=20).digest()
    return tuple(images.shape), images.dtype, str(images.device), digest


class LastBatch:
    """Per key, the outputs of the last batch run; ``get_or_run`` runs ``forward`` only on a miss."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, tuple[tuple, tuple[torch.Tensor, ...]]] = {}
        self.hits = 0  # for tests and benchmarks: how many passes were saved

    def get_or_run(self, key: Hashable, images: torch.Tensor,
                   forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        if images.requires_grad:
            return forward(images)
        mark = fingerprint(images)
        slot = self._slots.get(key)
        if slot is not None and slot[0] == mark:
            self.hits += 1
            return slot[1]
        outputs = forward(images)
        if not any(o.requires_grad for o in outputs):  # e.g. grad mode on and weights that require grad: not memoised
            self._slots[key] = (mark, outputs)
        return outputs

    def clear(self) -> None:
        self._slots.clear()


SHARED = LastBatch()
