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

    def mask(self, a: torch.Tensor, b: torch.Tensor, layer: int | torch.Tensor, rgb: bool = False,
             extra: torch.Tensor | None = None) -> torch.Tensor:
        """Per-channel mask in (0, 1); ``layer`` is one index or one per row (rows of several layers at once)."""
        layer = torch.as_tensor(layer, device=a.device).expand(len(a))
        indicator = torch.nn.functional.one_hot(layer, MAX_LAYERS + 1).to(a.dtype)
        if rgb:
            indicator[:, -1] = 1
        parts = [a, b] + ([extra] if self.extras else []) + [indicator.repeat(1, self.index_bits)]
        return torch.sigmoid(self.disentangle_net(torch.cat(parts, 1)))

    def forward(self, a: torch.Tensor, b: torch.Tensor, layer: int | torch.Tensor, rgb: bool = False,
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
        """Fuse two segment codes under a common code; every layer goes through the MLPs in one batch.

        The blenders are row-wise MLPs shared by all layers (the layer enters as a
        one-hot), so stacking the layers' rows is the same computation as the
        official per-layer loop, with a handful of matrix products instead of ~50.
        """
        n = len(s0)
        items = [(kind, i, a, b, c) for kind, lists in enumerate(((s0.conv, s1.conv, common.conv), (s0.rgb, s1.rgb, common.rgb)))
                 for i, (a, b, c) in enumerate(zip(*lists))]
        for _, _, a, _, _ in items:
            if self.width % a.shape[1]:
                raise ValueError(f"layer width {a.shape[1]} does not divide the FusionNet width {self.width}")
        out: dict[tuple[int, int], torch.Tensor] = {}
        is_early = [self.common_layers is None or it[1] < self.common_layers for it in items]
        early = [it for it, e in zip(items, is_early) if e]
        late = [it for it, e in zip(items, is_early) if not e]

        def rows(group, pos):  # the group's inputs at position pos (2: a, 3: b, 4: common), upsampled and stacked
            return torch.cat([self._up(it[pos]) for it in group])

        def unstack(x, group):  # pooled back to each layer's width
            return [self._pool(x[k * n : (k + 1) * n], it[2].shape[1]) for k, it in enumerate(group)]

        for group in (early, late):
            if not group:
                continue
            layers = torch.cat([torch.full((n,), it[1], dtype=torch.long, device=group[0][2].device) for it in group])
            a, b, c = rows(group, 2), rows(group, 3), rows(group, 4)
            if group is early:
                x0 = torch.cat([self._up(t) for t in unstack(self.blender_common(a, c, layers), group)])
                x1 = torch.cat([self._up(t) for t in unstack(self.blender_common(b, c, layers), group)])
                x = self.blender_segments(x0, x1, layers, extra=c)
            else:
                x = self.blender_segments(a, b, layers, extra=torch.zeros_like(c))
            for it, t in zip(group, unstack(x, group)):
                out[(it[0], it[1])] = t
        return SCode([out[(0, i)] for i in range(len(s0.conv))], [out[(1, i)] for i in range(len(s0.rgb))])


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

