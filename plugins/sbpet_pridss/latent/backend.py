"""PriDSS's latent backend: StyleFusion in StyleGAN2's style space (the paper's implementation).

For each original (a StyleGAN2 sample with stored latents, or a real photo
inverted with e4e), opposite-gender candidates are sampled from the generator
(kept only when the internal classifier says opposite gender), fused with the
original by the FFHQ FusionNet hierarchy (eyes, mouth, hair, background from
the original; skin and the global code from the candidate, see
:mod:`.fusion_net`), rendered, scored with the internal classifier P(male) and
recogniser SIM by the plugin front, and the fusion with the lowest PIC is kept.

Candidates are drawn from the per-image random generators the front hands over
(seeded by seed and image id), so an image's candidates, and its output, do not
depend on the batch it is in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sbpet_bench.api import FaceBatch, FaceSet, Option, PluginContext, PluginError

from ..backends import Draws, Fusions
from .assets import E4E, GENERATOR, STYLEFUSION
from .fusion_net import FusionNet, Hierarchy, fuse_pridss
from .stylegan2 import Generator, SCode, to_unit

# Options the PriDSS plugin declares for this backend (merge into its ``options``).
LATENT_OPTIONS: dict[str, Option] = {
    "latents": Option("", "latent backend: a stylegan2 data set folder (or its latents.pt) holding the originals' "
                      "w codes; images not in it are inverted with e4e"),
    "truncation": Option(0.7, "latent backend: truncation psi of the candidates (StyleFusion's FFHQ value)"),
    "max_rounds": Option(8, "latent backend: sampling rounds of 2M candidates before giving up on an image"),
    "chunk": Option(16, "latent backend: images generated per forward pass (bounds GPU memory)"),
}
LATENTS_FILE = "latents.pt"


def _resize(images: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if images.shape[-2:] == (h, w):
        return images
    return F.interpolate(images, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def load_latents(path: str | Path) -> dict[str, torch.Tensor]:
    """id -> w or w+ from a stylegan2 data set folder or its ``latents.pt`` (``{"ids": [...], "w": (N, ...)}``)."""
    path = Path(path)
    file = path / LATENTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise PluginError(f"pridss.latents: {file} not found; point it at a folder written by the stylegan2 data source")
    data = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "ids" not in data or "w" not in data or len(data["ids"]) != len(data["w"]):
        raise PluginError(f"pridss.latents: {file} is not a latents file (expected a dict with matching 'ids' and 'w')")
    return {str(i): w for i, w in zip(data["ids"], data["w"])}


class LatentBackend:
    """Fusion of S codes with StyleFusion's FusionNets (the :class:`..backends.FusionBackend` of ``backend=latent``)."""

    name = "latent"

    def __init__(self, opts: Mapping[str, Any], context: PluginContext, seed: int,
                 evaluators: Callable[[], tuple[Any, Any]], generator: Generator | None = None,
                 hierarchy: Hierarchy | None = None):
        self.opts = {**{k: o.default for k, o in LATENT_OPTIONS.items()}, **dict(opts)}
        self.context, self.seed, self.evaluators = context, seed, evaluators
        self.device = context.device
        self._generator, self._hierarchy = generator, hierarchy
        self._mean: torch.Tensor | None = None
        self._latents: dict[str, torch.Tensor] | None = None
        self._encoder = None

    # ------------------------------------------------------------------ models

    def _model_file(self, asset: str) -> str:
        try:
            return self.context.model_path(asset)
        except Exception as exc:  # the store's message says how to add official weights
            raise PluginError(f"pridss latent backend needs model {asset!r}: {exc}") from exc

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            path = self._model_file(GENERATOR)
            try:
                self._generator = Generator.load(path)
            except ValueError as exc:
                raise PluginError(f"pridss: cannot load the StyleGAN2 generator: {exc}") from exc
        self._generator.to(self.device).eval().requires_grad_(False)
        return self._generator

    @property
    def hierarchy(self) -> Hierarchy:
        if self._hierarchy is None:
            nets = {}
            for node, asset in STYLEFUSION.items():
                try:
                    nets[node] = FusionNet.load(self._model_file(asset))
                except ValueError as exc:
                    raise PluginError(f"pridss: cannot load StyleFusion node {node!r}: {exc}") from exc
            self._hierarchy = Hierarchy(nets)
        for net in self._hierarchy.nets.values():
            net.requires_grad_(False)
        return self._hierarchy.to(self.device)

    @property
    def mean_latent(self) -> torch.Tensor:
        if self._mean is None:
            self._mean = self.generator.mean_latent(4096, torch.Generator().manual_seed(self.seed))
        return self._mean

    # ------------------------------------------------------------------ harness hooks (nothing to learn)

    def fit(self, train: FaceSet, pool: FaceSet) -> None:
        """Candidates come from the generator, not from the pool: nothing to fit."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        return None

    # ------------------------------------------------------------------ steps

    def _render(self, s: SCode, h: int, w: int) -> torch.Tensor:
        """S codes -> images in [0, 1] at (h, w), ``chunk`` at a time."""
        gen, step = self.generator, max(1, int(self.opts["chunk"]))
        parts = [to_unit(_resize(gen.synthesize(s.map(lambda t: t[i : i + step])), h, w))
                 for i in range(0, len(s), step)]
        return torch.cat(parts) if parts else torch.zeros(0, 3, h, w, device=self.device)

    def original_codes(self, batch: FaceBatch) -> tuple[SCode, list[str]]:
        """The originals' S codes: stored latents where known, e4e inversion otherwise."""
        gen = self.generator
        if self._latents is None:
            self._latents = load_latents(self.opts["latents"]) if self.opts["latents"] else {}
        known = [i for i, image_id in enumerate(batch.ids) if image_id in self._latents]
        w = torch.zeros(len(batch), gen.n_latent, gen.style_dim, device=self.device)
        if known:
            stored = torch.stack([gen.w_plus(self._latents[batch.ids[i]][None].float())[0] for i in known])
            w[torch.tensor(known, device=self.device)] = stored.to(self.device)
        known_set = set(known)
        missing = [i for i in range(len(batch)) if i not in known_set]
        if missing:
            encoder = self.encoder(missing_ids=[batch.ids[i] for i in missing[:3]])
            w[torch.tensor(missing, device=self.device)] = encoder.invert(batch.images[missing].to(self.device))
        return gen.styles(w), ["latents" if i in known_set else "e4e" for i in range(len(batch))]

    def encoder(self, missing_ids: list[str]):
        if self._encoder is None:
            try:
                path = self.context.model_path(E4E)
            except Exception as exc:
                raise PluginError(
                    f"pridss latent backend: no stored latents for {', '.join(missing_ids)} ... and no e4e encoder to "
                    f"invert real photos ({exc}). Either run it on a stylegan2 data set and set pridss.latents to its "
                    f"folder, or add the official e4e weights with `sbpet models add {E4E} FILE`.") from exc
            from .e4e import E4EInverter

            self._encoder = E4EInverter.load(path, self.generator, self.device)
        return self._encoder

    def sample_candidates(self, ids: list[str], draws: Draws, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(B, M, D) w codes of opposite-gender candidates, their P(male) (B, M), and each image's rounds.

        Each image draws 2M z per round from its own generator in ``draws``; the
        internal classifier labels the rendered samples, and the first M of the
        opposite gender are kept.
        """
        gen, m, rngs = self.generator, draws.m, draws.rngs
        classifier, _ = self.evaluators()
        kept: list[list[torch.Tensor]] = [[] for _ in ids]
        kept_p: list[list[float]] = [[] for _ in ids]
        target = (1 - draws.genders).tolist()
        rounds = [0] * len(ids)
        while any(len(k) < m for k in kept):
            if max(rounds) == int(self.opts["max_rounds"]):
                short = [ids[i] for i, k in enumerate(kept) if len(k) < m]
                raise PluginError(f"pridss: fewer than {m} opposite-gender candidates after {max(rounds)} rounds of {2 * m} "
                                  f"samples for {', '.join(short[:3])}; check the internal classifier "
                                  f"{self.opts['classifier']!r} or raise pridss.max_rounds")
            rows = [i for i, k in enumerate(kept) if len(k) < m]
            for i in rows:
                rounds[i] += 1
            z = torch.from_numpy(np.concatenate([rngs[i].standard_normal((2 * m, gen.style_dim), dtype=np.float32)
                                                 for i in rows])).to(self.device)
            wz = gen.truncate(gen.mapping(z), float(self.opts["truncation"]), self.mean_latent)
            p = torch.cat([classifier.predict_male(img).float() for img in
                           self._render(gen.styles(wz), h, w).split(max(1, int(self.opts["chunk"])))]).cpu()
            for j, row in enumerate(rows):
                for k in range(j * 2 * m, (j + 1) * 2 * m):
                    if len(kept[row]) < m and int(p[k] > 0.5) == target[row]:
                        kept[row].append(wz[k])
                        kept_p[row].append(float(p[k]))
        return torch.stack([torch.stack(k) for k in kept]), torch.tensor(kept_p), rounds

    def fuse_codes(self, original: SCode, candidate_w: torch.Tensor) -> SCode:
        """Fuse each original (B) with its M candidates (B, M, D) -> (B*M) S codes."""
        b, m = candidate_w.shape[:2]
        orig = original.map(lambda t: t.repeat_interleave(m, 0))
        cand = self.generator.styles(candidate_w.reshape(b * m, -1))
        step = max(1, int(self.opts["chunk"]))
        parts = [fuse_pridss(orig.map(lambda t: t[i : i + step]), cand.map(lambda t: t[i : i + step]), self.hierarchy)
                 for i in range(0, b * m, step)]
        return SCode.cat(parts)

    # ------------------------------------------------------------------ fusion

    @torch.no_grad()
    def fuse(self, batch: FaceBatch, draws: Draws) -> Fusions:
        """Every image's M candidates sampled, fused with its S code and rendered: (B, M, 3, H, W)."""
        b, _, h, w = batch.images.shape
        original, code_source = self.original_codes(batch)
        cand_w, cand_p, rounds = self.sample_candidates(list(batch.ids), draws, h, w)
        m = cand_w.shape[1]
        fused = self._render(self.fuse_codes(original, cand_w), h, w).view(b, m, 3, h, w)
        return Fusions(fused, torch.arange(b), per_image=[{"original_code": code_source[i], "sampling_rounds": rounds[i]}
                                                         for i in range(b)],
                       per_candidate={"candidate_p_male": cand_p}, digits={"candidate_p_male": 6})
