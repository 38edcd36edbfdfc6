"""StyleFusion's FusionNets and the FFHQ hierarchy, batched, with PriDSS's choice of code per segment.

A FusionNet (Kafri et al., "StyleFusion", 2021) fuses two S codes layer by
layer. For each layer, both codes (and a third, "common" code that carries
global attributes) are brought to a common width by nearest upsampling, fed to
an MLP together with a one-hot of the layer index, and the MLP's sigmoid output
is a per-channel mask ``m`` that blends ``a + m (b - a)``: ``m = 0`` keeps ``a``,
``m = 1`` takes ``b``. The blend is max-pooled back to the layer's width.
Parameter names match the official state dicts (``blender_common`` and
``blender_segments``, each a ``disentangle_net`` of five equalised linear
layers), so the official ``.pt`` files load strictly.

FFHQ hierarchy (each inner node has one FusionNet, fusing its two children
under its own common code)::

    all -> face / bg_hair_clothes
    face -> skin_mouth / eyes
    skin_mouth -> mouth / skin
    bg_hair_clothes -> bg_clothes / hair
    bg_clothes -> clothes / bg

PriDSS keeps the original's identity-bearing and context segments (eyes,
mouth, hair, background, clothes) and takes the skin and the global ("all")
code from an opposite-gender candidate; see :data:`PRIDSS_SOURCES`. The inner
nodes' own codes follow the conventions of StyleFusion's demo for moving
eyes, mouth and hair between images (``face`` and ``skin_mouth`` go with the
eyes and mouth, ``bg_hair_clothes`` with the hair), so they come from the
original.

Where the nose comes from: the hierarchy has no nose segment. StyleFusion's
FFHQ segments come from a face-parsing network whose classes were grouped into
the six leaves above; the nose is neither eyes nor mouth, so (we assume; the
grouping code is not public with the weights) it belongs to the skin leaf and
therefore follows the *candidate*, to the extent the FusionNets attribute its
channels to skin. This differs from PriDSS's pixel backend, which keeps the
original's nose. Keeping it here would need a nose node and retrained
FusionNets, which do not exist; the skin_mouth common code is the original's,
which pulls the shared lower-face attributes (including the nose region's
shading) towards the original.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .stylegan2 import EqualLinear, SCode

MAX_LAYERS = 18  # the indicator has MAX_LAYERS + 1 bits (the last one flags ToRGB layers)
HIERARCHY_FFHQ: dict[str, tuple[str, str]] = {
    "all": ("face", "bg_hair_clothes"),
    "face": ("skin_mouth", "eyes"),
    "skin_mouth": ("mouth", "skin"),
    "bg_hair_clothes": ("bg_clothes", "hair"),
    "bg_clothes": ("clothes", "bg"),
}
LEAVES_FFHQ = ("mouth", "skin", "eyes", "hair", "bg", "clothes")
ORIGINAL, CANDIDATE = "original", "candidate"
# Which image's S code drives each node of the FFHQ hierarchy in PriDSS.
PRIDSS_SOURCES: dict[str, str] = {
    "all": CANDIDATE, "skin": CANDIDATE,
    "face": ORIGINAL, "skin_mouth": ORIGINAL, "mouth": ORIGINAL, "eyes": ORIGINAL,
    "bg_hair_clothes": ORIGINAL, "bg_clothes": ORIGINAL, "hair": ORIGINAL, "bg": ORIGINAL, "clothes": ORIGINAL,
}


class LatentBlender(nn.Module):
    """The per-layer mask MLP: (a, b[, extra], one-hot layer) -> sigmoid mask; returns a + mask (b - a)."""

    def __init__(self, width: int = 512, index_bits: int = 10, extras: int = 0, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 5 * width
        sizes = [width * (2 + extras) + index_bits * (MAX_LAYERS + 1), hidden, hidden, hidden, width, width]
        self.width, self.index_bits, self.extras = width, index_bits, extras
        self.disentangle_net = nn.Sequential(*[EqualLinear(i, o, lr_mul=0.01, activation=True)
                                               for i, o in zip(sizes[:-1], sizes[1:])])

    def mask(self, a: torch.Tensor, b: torch.Tensor, layer: int, rgb: bool = False,
             extra: torch.Tensor | None = None) -> torch.Tensor:
        indicator = a.new_zeros(MAX_LAYERS + 1)
        indicator[layer] = 1
        if rgb:
            indicator[-1] = 1
        parts = [a, b] + ([extra] if self.extras else []) + [indicator.repeat(self.index_bits).expand(len(a), -1)]
        return torch.sigmoid(self.disentangle_net(torch.cat(parts, 1)))

    def forward(self, a: torch.Tensor, b: torch.Tensor, layer: int, rgb: bool = False,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        return a + self.mask(a, b, layer, rgb, extra) * (b - a)


class FusionNet(nn.Module):
    """Fuses the S codes of two segments under a common code, layer by layer.

    The first ``common_layers`` conv (and ToRGB) layers first blend each segment
    with the common code, then blend the two results with the common code as
    context; later layers blend the two segments directly.
    """

    def __init__(self, width: int = 512, index_bits: int = 10, common_layers: int = 5, hidden: int | None = None):
        super().__init__()
        self.width, self.common_layers = width, common_layers
        self.blender_segments = LatentBlender(width, index_bits, extras=1, hidden=hidden)
        self.blender_common = LatentBlender(width, index_bits, hidden=hidden)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], common_layers: int = 5) -> "FusionNet":
        if "state_dict" in state:
            state = state["state_dict"]
        try:
            first = state["blender_common.disentangle_net.0.weight"]
            width = int(state["blender_common.disentangle_net.4.weight"].shape[0])
        except KeyError as exc:
            raise ValueError(f"not a StyleFusion FusionNet state dict: missing {exc}") from None
        index_bits, rest = divmod(int(first.shape[1]) - 2 * width, MAX_LAYERS + 1)
        if rest or index_bits < 1:
            raise ValueError(f"FusionNet input width {first.shape[1]} does not fit width {width} and a layer one-hot")
        net = cls(width, index_bits, common_layers, hidden=int(first.shape[0]))
        net.load_state_dict(state, strict=True)
        return net

    @classmethod
    def load(cls, path: str) -> "FusionNet":
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            return cls.from_state_dict(state)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        # nearest upsampling C -> width (integer factor) == repeating each channel
        return x.repeat_interleave(self.width // x.shape[1], dim=1)

    def _pool(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        return x.view(len(x), channels, self.width // channels).amax(-1)

    def forward(self, s0: SCode, s1: SCode, common: SCode) -> SCode:
        out: list[list[torch.Tensor]] = [[], []]
        for kind, (l0, l1, lc) in enumerate(((s0.conv, s1.conv, common.conv), (s0.rgb, s1.rgb, common.rgb))):
            for i, (a, b, c) in enumerate(zip(l0, l1, lc)):
                ch = a.shape[1]
                if self.width % ch:
                    raise ValueError(f"layer width {ch} does not divide the FusionNet width {self.width}")
                a_up, b_up, c_up = self._up(a), self._up(b), self._up(c)
                if self.common_layers is not None and i >= self.common_layers:
                    x = self.blender_segments(a_up, b_up, i, extra=torch.zeros_like(c_up))
                else:
                    x0 = self._up(self._pool(self.blender_common(a_up, c_up, i), ch))
                    x1 = self._up(self._pool(self.blender_common(b_up, c_up, i), ch))
                    x = self.blender_segments(x0, x1, i, extra=c_up)
                out[kind].append(self._pool(x, ch))
        return SCode(*out)


class Hierarchy:
    """A tree of FusionNets; nodes without a net pass their own code through."""

    def __init__(self, nets: Mapping[str, FusionNet], tree: Mapping[str, tuple[str, str]] = HIERARCHY_FFHQ):
        unknown = set(nets) - set(tree)
        if unknown:
            raise ValueError(f"FusionNets for unknown nodes: {sorted(unknown)}")
        self.nets, self.tree = dict(nets), dict(tree)

    def to(self, device: torch.device) -> "Hierarchy":
        for net in self.nets.values():
            net.to(device).eval()
        return self

    def fuse(self, codes: Mapping[str, SCode], node: str = "all") -> SCode:
        """Fuse per-node S codes (a dict node -> SCode, all of one batch size) from ``node`` down."""
        children = self.tree.get(node)
        if children is None or node not in self.nets:
            return codes[node]
        return self.nets[node](self.fuse(codes, children[0]), self.fuse(codes, children[1]), codes[node])

    def nodes(self, node: str = "all") -> list[str]:
        children = self.tree.get(node)
        if children is None or node not in self.nets:
            return [node]
        return [node] + self.nodes(children[0]) + self.nodes(children[1])


def pridss_codes(original: SCode, candidate: SCode, hierarchy: Hierarchy,
                 sources: Mapping[str, str] = PRIDSS_SOURCES) -> dict[str, SCode]:
    """The per-node codes PriDSS feeds the hierarchy: each node's code from the original or the candidate."""
    pick = {ORIGINAL: original, CANDIDATE: candidate}
    return {node: pick[sources[node]] for node in hierarchy.nodes()}


def fuse_pridss(original: SCode, candidate: SCode, hierarchy: Hierarchy) -> SCode:
    return hierarchy.fuse(pridss_codes(original, candidate, hierarchy))

