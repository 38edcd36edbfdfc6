"""Semi-adversarial training of PrivacyNet: G against a PatchGAN D, steered by frozen auxiliary networks.

One step draws a gender-balanced batch and a privacy code per row (obfuscate
gender, or keep everything), then

* D learns real vs. generated (least-squares GAN loss);
* G minimises ``w_adv * adv + w_attr * attr + w_id * identity + w_rec * rec + w_prox * prox + w_tv * tv`` where
  ``attr`` is the Bernoulli KL between the auxiliary classifier's P(male) on G's output and its
  target: 0.5 for obfuscated rows (``target="half"``; the benchmark scores privacy as
  max(AUC, 1-AUC), so a flipped classifier leaks as much as a correct one) or the opposite of
  the original's P(male) (``target="flip"``), and the original's P(male) for kept rows;
  ``identity`` is 1 - cosine between the matcher's embeddings of G's output and of x;
  ``rec`` is the L1 distance to x of kept rows (G(x, 0) must reconstruct x) and ``prox`` the
  same for obfuscated rows (a small pull that stops G from drifting).

Batches, codes and views come from generators seeded by (seed, step), the learning rate
(constant, then a linear decay) is a function of the step, and the checkpoint holds both
optimisers, so a training resumed from a checkpoint takes the same steps as one that never
stopped. The passes run their convolutions in bfloat16 under autocast (``precision``), which
costs two thirds of float32's time on a CPU with native bfloat16.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from .nets import ATTRIBUTES, Generator, PatchDiscriminator

LOSS_NAMES = ("d", "g", "adv", "attr", "identity", "rec", "prox", "tv", "p_male_obf", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    size: int = 96
    ngf: int = 16
    ndf: int = 32
    n_res: int = 3
    batch_size: int = 8
    lr: float = 5e-4
    keep_fraction: float = 0.1
    target: str = "half"
    w_adv: float = 10.0
    w_attr: float = 20.0
    w_id: float = 20.0
    w_rec: float = 10.0
    w_prox: float = 5.0
    w_tv: float = 0.0
    augment: float = 1.0
    lr_decay: float = 0.0  # share of the last steps over which lr falls linearly to zero (0 = constant)
    ema: float = 0.0  # decay of the moving average of G's weights that protects (0 = G's last weights)
    precision: str = "bf16"
    seed: int = 0


class AuxNets:
    """The frozen auxiliary networks: log-odds of male, one row per classifier, and unit-norm embeddings.

    Several classifiers form an ensemble: G has to confound all of them, which pushes it
    towards changes that unlike networks agree on — and that carry over to an unseen
    evaluator — rather than towards one network's adversarial blind spots. A classifier
    that is a linear probe on the matcher's own embeddings (as the default
    ``resnet-gender-probe`` on ``faceapi-resnet`` is: it exposes ``embedder``, ``weight`` and
    ``bias``) reuses the matcher's pass instead of running the network again.
    """

    def __init__(self, classifiers: Any, matcher: Any):
        self.classifiers = list(classifiers) if isinstance(classifiers, (list, tuple)) else [classifiers]
        self.matcher = matcher

    def _shares_matcher(self, classifier: Any) -> bool:
        return (getattr(classifier, "embedder", None) is self.matcher
                and isinstance(getattr(classifier, "weight", None), torch.Tensor)
                and isinstance(getattr(classifier, "bias", None), torch.Tensor))

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.matcher.embed(images)
        rows = []
        for clf in self.classifiers:
            if self._shares_matcher(clf):
                rows.append(emb @ clf.weight + clf.bias)
            elif hasattr(clf, "logits"):
                rows.append(clf.logits(images).reshape(-1))
            else:
                p = clf.predict_male(images).reshape(-1).clamp(1e-6, 1 - 1e-6)
                rows.append(torch.log(p) - torch.log1p(-p))
        return torch.stack(rows), emb


def random_views(images: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """Random zoom, shift, rotation, brightness/contrast and blur of each image, differentiably.

    The auxiliary networks see G's output through these (and the reference through the
    same ones), so G cannot rely on perturbations that only work pixel-exactly: the
    changes that survive are the coarse, semantic ones that other classifiers also read.
    """
    if strength <= 0:
        return images
    b, dev = images.shape[0], images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=gen)).to(dev)

    angle = uniform(-8, 8) * strength * torch.pi / 180
    scale = 1 + uniform(-0.1, 0.1) * strength
    tx, ty = uniform(-0.06, 0.06) * strength, uniform(-0.06, 0.06) * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain, bias = 1 + uniform(-0.15, 0.15) * strength, uniform(-0.06, 0.06) * strength
    out = (out - 0.5) * gain.view(b, 1, 1, 1) + 0.5 + bias.view(b, 1, 1, 1)
    # half the views are blurred a little (3x3 binomial), which erases pixel-level tricks
    blurred = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), 3, 1)
    pick = (torch.rand(b, generator=gen) < 0.5 * strength).to(dev).view(b, 1, 1, 1)
    return torch.where(pick, blurred, out).clamp(0, 1)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute difference of neighbouring pixels."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def bernoulli_kl(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-row KL(Bernoulli(target) || Bernoulli(sigmoid(logits))): zero exactly at the target."""
    t = target.clamp(1e-6, 1 - 1e-6)
    entropy = -(t * t.log() + (1 - t) * (1 - t).log())
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") - entropy


# CPU threads of a training. torch's CPU kernels split reductions (convolution weight gradients, sums, norms)
# by thread, so the same seed gave weights that differed in the last bits at 1 and 2 threads (measured: up
# to 4e-3 after 4 fp32 steps of the test's tiny model); a fixed count makes a seed's weights independent of the
# caller's setting (the harness, a Ray worker, a test). One thread: on this project's shared 2-core CPU a
# second thread bought little (README: Cost).
TRAINING_THREADS = 1


@contextlib.contextmanager
def deterministic_training(device: torch.device) -> Iterator[None]:
    """Deterministic kernels (warn where an op has none) and, on a CPU, a fixed thread count; then the caller's back.

    With the seeded batches, codes, views and initial weights, two trainings with one seed on one
    CPU then give the same weights, whatever thread count the caller runs at.
    """
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cpu":
        torch.set_num_threads(TRAINING_THREADS)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_num_threads(threads)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


class Trainer:
    """G, D, their optimisers and the loss history; ``run`` trains up to a step count."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        if cfg.target not in ("half", "flip"):
            raise ValueError(f"target must be 'half' or 'flip', got {cfg.target!r}")
        if cfg.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {cfg.precision!r}")
        self.cfg, self.device = cfg, device
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
            torch.manual_seed(cfg.seed)
            self.G = Generator(cfg.ngf, cfg.n_res).to(device)
            self.D = PatchDiscriminator(cfg.ndf).to(device)
        if not 0 <= cfg.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {cfg.ema!r}")
        # The averaged generator (Yazici et al., ICLR 2019; StyleGAN's G_ema): the last iterate of a GAN wanders
        # with the last few hundred batches, so one seed's network differs from another's by where the training
        # happened to stop; an average of the recent iterates is less sensitive to it. It never trains.
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema > 0 else None
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.step = 0
        self.history: list[list[float]] = []

    # ---- data

    def sample(self, images: torch.Tensor, genders: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A gender-balanced, randomly flipped batch and its codes, a pure function of (seed, step)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        b = self.cfg.batch_size
        groups = [torch.nonzero(genders == g).flatten() for g in (0, 1)]
        if all(len(g) for g in groups):  # LFW is 3/4 male: balance so that both directions get trained
            picks = [g[torch.randint(len(g), (n,), generator=gen)] for g, n in zip(groups, (b // 2, b - b // 2))]
            idx = torch.cat(picks)
        else:
            idx = torch.randint(len(images), (b,), generator=gen)
        x = images[idx].to(self.device).float() / 255.0
        flip = torch.rand(b, generator=gen) < 0.5
        x[flip.to(self.device)] = x[flip.to(self.device)].flip(-1)
        code = torch.zeros(b, len(ATTRIBUTES))
        code[:, ATTRIBUTES.index("gender")] = (torch.rand(b, generator=gen) >= self.cfg.keep_fraction).float()
        return x, code.to(self.device)

    # ---- schedule

    def learning_rate(self, total_steps: int) -> float:
        """lr for the step about to be taken: constant, then linear decay to zero over the last ``lr_decay`` share.

        A pure function of the step and the budget, so a resumed training follows the same schedule.
        """
        decay_steps = self.cfg.lr_decay * total_steps
        if decay_steps <= 0:
            return self.cfg.lr
        return self.cfg.lr * min(1.0, (total_steps - self.step) / decay_steps)

    # ---- one step

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 convolutions (float32 weights, optimiser and losses) or plain float32."""
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def train_step(self, x: torch.Tensor, code: torch.Tensor, aux: AuxNets) -> dict[str, float]:
        cfg = self.cfg
        obf = code[:, ATTRIBUTES.index("gender")]
        keep = 1 - obf
        b = x.shape[0]
        with self._autocast():
            fake = self.G(x, code)

            # D: least-squares GAN loss on real faces and (detached) outputs of G, in one pass (the
            # instance norms are per image, so batching real and fake changes nothing but the cost).
            d_out = self.D(torch.cat([x, fake.detach()])).float()
            d_loss = 0.5 * ((d_out[:b] - 1).pow(2).mean() + d_out[b:].pow(2).mean())
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        # G: realism, attribute confounding/keeping, identity, pixels. The auxiliary networks see
        # the same random view of the input and of G's output (two generators, one seed).
        view_seed = self.cfg.seed * 7_919 + self.step
        with self._autocast():
            adv = (self.D(fake).float() - 1).pow(2).mean()
            with torch.no_grad():
                logit0, emb0 = aux(random_views(x, torch.Generator().manual_seed(view_seed), cfg.augment))
            logit1, emb1 = aux(random_views(fake, torch.Generator().manual_seed(view_seed), cfg.augment))
        logit0, emb0, logit1, emb1 = logit0.float(), emb0.float(), logit1.float(), emb1.float()
        p0 = torch.sigmoid(logit0)  # (classifiers, batch)
        obf_target = torch.full_like(p0, 0.5) if cfg.target == "half" else 1 - p0
        target = obf * obf_target + keep * p0
        attr = bernoulli_kl(target, logit1).mean()
        identity = (1 - (emb1 * emb0).sum(1)).mean()
        l1 = (fake - x).abs().flatten(1).mean(1)
        rec, prox = _masked_mean(l1, keep), _masked_mean(l1, obf)
        tv = total_variation(fake - x).mean()  # penalises high-frequency changes: texture, not shape
        g_loss = (cfg.w_adv * adv + cfg.w_attr * attr + cfg.w_id * identity + cfg.w_rec * rec + cfg.w_prox * prox
                  + cfg.w_tv * tv)
        self.opt_g.zero_grad(set_to_none=True)
        # Only G's parameters: the auxiliary networks stay frozen whatever they are made of.
        g_loss.backward(inputs=list(self.G.parameters()))
        self.opt_g.step()
        self.step += 1
        self._update_average()
        p_obf = _masked_mean(torch.sigmoid(logit1.detach()).mean(0), obf)
        return {"d": d_loss.item(), "g": g_loss.item(), "adv": adv.item(), "attr": attr.item(),
                "identity": identity.item(), "rec": rec.item(), "prox": prox.item(), "tv": tv.item(),
                "p_male_obf": p_obf.item()}

    def _update_average(self) -> None:
        """G_ema <- d G_ema + (1 - d) G, with d warmed up as (1 + t) / (10 + t) so early steps do not linger."""
        if self.G_ema is None:
            return
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for avg, live in zip(self.G_ema.parameters(), self.G.parameters()):
                avg.lerp_(live, 1 - decay)
            for avg, live in zip(self.G_ema.buffers(), self.G.buffers()):
                avg.copy_(live)

    @property
    def output_generator(self) -> torch.nn.Module:
        """The generator that protects: the weight average when ``ema`` > 0, else G as trained."""
        return self.G_ema if self.G_ema is not None else self.G

    def run(self, images: torch.Tensor, genders: torch.Tensor, aux: AuxNets, steps: int, *,
            checkpoint: Path | None = None, every: int = 50,
            progress: Callable[..., Iterable[Any]] = lambda it, **_: it) -> None:
        """Train until ``self.step == steps``, saving ``checkpoint`` every ``every`` steps and at the end."""
        with deterministic_training(self.device):
            self._run(images, genders, aux, steps, checkpoint, every, progress)
        self.G.eval()
        self.output_generator.eval()

    def _run(self, images: torch.Tensor, genders: torch.Tensor, aux: AuxNets, steps: int, checkpoint: Path | None,
             every: int, progress: Callable[..., Iterable[Any]]) -> None:
        import time

        self.G.train()
        self.D.train()
        for _ in progress(range(self.step, steps), description="privacynet: training G and D", total=max(0, steps - self.step)):
            t0 = time.perf_counter()
            x, code = self.sample(images, genders)
            lr = self.learning_rate(steps)
            for group in (*self.opt_g.param_groups, *self.opt_d.param_groups):
                group["lr"] = lr
            losses = self.train_step(x, code, aux)
            losses["seconds"] = time.perf_counter() - t0
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"PrivacyNet's losses diverged at step {self.step}: {losses}; lower lr")
            self.history.append([float(self.step)] + [losses[k] for k in LOSS_NAMES])
            if checkpoint is not None and (self.step % every == 0 or self.step == steps):
                self.save(checkpoint)

    # ---- checkpoints

    def state(self) -> dict[str, Any]:
        return {"config": asdict(self.cfg), "step": self.step, "generator": self.G.state_dict(),
                "discriminator": self.D.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "history": self.history, "loss_names": list(LOSS_NAMES),
                **({"generator_ema": self.G_ema.state_dict()} if self.G_ema is not None else {})}

    def save(self, path: Path) -> None:
        """Write atomically: a training killed mid-save keeps the previous checkpoint."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.state(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load(self, path: Path) -> bool:
        """Resume from ``path`` if it holds a checkpoint of this configuration; False if it does not."""
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("config") != asdict(self.cfg):
            return False
        self.G.load_state_dict(state["generator"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["generator_ema"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.history = int(state["step"]), [list(map(float, r)) for r in state["history"]]
        return True

    # ---- loss curves

    def write_curves(self, folder: Path) -> tuple[Path, Path]:
        """``losses.csv`` (one row per step) and ``losses.png`` (a panel per loss, smoothed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        folder.mkdir(parents=True, exist_ok=True)
        csv_path, png_path = folder / "losses.csv", folder / "losses.png"
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", *LOSS_NAMES])
            writer.writerows(self.history)
        data = np.asarray(self.history, dtype=float).reshape(-1, len(LOSS_NAMES) + 1)
        names = LOSS_NAMES[:-1]
        fig, axes = plt.subplots(2, math.ceil(len(names) / 2), figsize=(14, 6), squeeze=False)
        window = max(1, len(data) // 50)
        for ax, (i, name) in zip(axes.flat, enumerate(names, start=1)):
            ax.plot(data[:, 0], data[:, i], alpha=0.3, lw=0.8)
            if len(data) >= window > 1:
                smooth = np.convolve(data[:, i], np.ones(window) / window, mode="valid")
                ax.plot(data[window - 1:, 0], smooth, lw=1.5)
            ax.set_title(name)
            ax.set_xlabel("step")
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(png_path, dpi=80)
        plt.close(fig)
        return csv_path, png_path
