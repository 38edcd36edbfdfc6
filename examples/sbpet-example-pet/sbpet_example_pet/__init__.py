"""An example PET plugin: desaturate and smooth the face, keeping its outline.

Install it next to sbpet (``uv pip install examples/sbpet-example-pet``) and run
``sbpet run --pets example --data ../shared/data/lfw3d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sbpet_bench import hookimpl
from sbpet_bench.api import PET, FaceBatch, Option, ProtectResult


class Desaturate(PET):
    name = "example"
    version = "0.1.0"
    description = "desaturate (strength) and box-smooth (radius) the whole image"
    options = {
        "strength": Option(0.8, "0 keeps colour, 1 is fully grey"),
        "radius": Option(1, "box-filter radius in pixels; 0 disables smoothing"),
    }
    input_size = None  # works at any size

    def protect(self, batch: FaceBatch) -> ProtectResult:
        x = batch.images  # (B, 3, H, W) in [0, 1] on the run's device
        grey = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        s = float(self.opts["strength"])
        out = (1 - s) * x + s * grey
        r = int(self.opts["radius"])
        if r > 0:
            out = F.avg_pool2d(F.pad(out, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)
        saturation = (x.amax(1) - x.amin(1)).mean(dim=(1, 2))
        # One JSON-able dict per image: it lands in diagnostics.jsonl and under the report's images.
        return ProtectResult(out.clamp(0, 1), [{"input_saturation": float(v)} for v in saturation])


@hookimpl
def sbpet_register_pets():
    return [Desaturate]
