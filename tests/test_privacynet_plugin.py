"""PrivacyNet on a tiny configuration with small differentiable stand-ins for its auxiliary networks."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from sbpet_bench.api import Dependency, FaceBatch, GenderClassifier, PluginError, Verifier
from sbpet_bench.testing import InMemoryFaceSet, make_context
from sbpet_privacynet.nets import Generator, PatchDiscriminator, privacy_code
from sbpet_privacynet.plugin import BUDGETS, CHECKPOINT_FILE, PrivacyNet
from sbpet_privacynet.training import AuxNets, Trainer, bernoulli_kl, random_views, total_variation

TINY = {"size": 32, "ngf": 8, "ndf": 8, "n_res": 1, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 3}


class ColourGender(GenderClassifier):
    """P(male) from left-minus-right brightness: differentiable, and a spatial cue, as the instance norms in G keep those."""

    name = "stub-gender"

    def __init__(self, context):
        super().__init__({}, context)
        self.scale = torch.nn.Parameter(torch.tensor(12.0))  # a parameter, to check that it stays frozen

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale * (images[..., : images.shape[-1] // 2].mean((1, 2, 3)) - images[..., images.shape[-1] // 2:].mean((1, 2, 3)))

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))


class PoolMatcher(Verifier):
    """Unit-norm embedding of the image's 8 row bands: blind to the left-right cue the stub classifier reads."""

    name = "stub-matcher"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.adaptive_avg_pool2d(images - 0.5, (8, 1)).flatten(1), dim=1)


def faces(n: int = 16, side: int = 40, seed: int = 0) -> InMemoryFaceSet:
    """Smooth random images; 'males' are brighter on the left, so the stub classifier separates them."""
    gen = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.rand(n, 3, 8, 8, generator=gen), size=(side, side), mode="bilinear", align_corners=False)
    genders = [i % 2 for i in range(n)]
    ramp = torch.linspace(0.15, -0.15, side).view(1, 1, 1, side)
    sign = torch.tensor([1.0 if g else -1.0 for g in genders]).view(n, 1, 1, 1)
    return InMemoryFaceSet((images + sign * ramp).clamp(0, 1), genders, [f"p{i // 2}" for i in range(n)])


def make(tmp_path, seed: int = 3, **options) -> PrivacyNet:
    stub_ctx = make_context(tmp_path / "stubs")
    plugins = {"stub-gender": ColourGender(stub_ctx), "stub-matcher": PoolMatcher({}, stub_ctx)}
    ctx = make_context(tmp_path / "work", plugins=plugins, seed=seed)
    return PrivacyNet({**TINY, "classifier": "stub-gender", "matcher": "stub-matcher", **options}, ctx)


def test_networks_shapes_and_identity_start():
    G, D = Generator(ngf=8, n_res=1), PatchDiscriminator(ndf=8)
    x = torch.rand(2, 3, 32, 32)
    out = G(x, privacy_code(["gender"], 2))
    assert out.shape == x.shape
    assert torch.equal(out, x)  # the zero-initialised head makes an untrained G the identity
    assert D(x).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        G(torch.rand(1, 3, 30, 30), privacy_code(["gender"], 1))
    with pytest.raises(ValueError, match="unknown attribute"):
        privacy_code(["hair"], 1)


def test_few_steps_lower_the_attribute_loss_and_keep_aux_frozen(tmp_path):
    pet = make(tmp_path, w_id=1.0, w_prox=0.5, w_adv=0.3)  # weights that suit the stubs' scales
    trainer = Trainer(pet.train_config(), torch.device("cpu"))
    aux = pet.aux()
    data = faces()
    images = (data.all(size=32).images * 255).round().to(torch.uint8)
    x = images.float() / 255
    code = privacy_code(["gender"], len(x))

    def attr_loss() -> float:
        with torch.no_grad():
            return bernoulli_kl(torch.full((len(x),), 0.5), aux(trainer.G(x, code))[0][0]).mean().item()

    before = attr_loss()
    trainer.run(images, data.genders, aux, 40)
    after = attr_loss()
    assert after < 0.8 * before, (before, after)
    assert aux.classifiers[0].scale.grad is None  # only G's parameters receive gradients
    assert trainer.step == 40 and len(trainer.history) == 40


def test_fit_protect_state_round_trip(tmp_path):
    pet = make(tmp_path, steps=6)
    pet.fit(faces(), faces(4, seed=1))
    batch = faces(6, seed=2).all()
    result = pet.protect(batch)
    assert result.images.shape == batch.images.shape  # resized to G's 32 and back to 40
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert len(result.diagnostics) == 6 and all(d["mean_abs_change"] > 0 for d in result.diagnostics)
    work = tmp_path / "work"
    with open(work / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(float(r["step"])) for r in rows] == list(range(1, 7))
    assert (work / "losses.png").stat().st_size > 1000

    state = pet.state_dict()
    assert int(state["steps_done"]) == 6
    fresh = make(tmp_path / "other")
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.protect(batch).images, result.images)
    wrong = make(tmp_path / "wrong", ngf=16)
    with pytest.raises(PluginError, match="ngf"):
        wrong.load_state_dict(state)

    # option checkpoint: a saved state (or the training checkpoint in work_dir) replaces training
    torch.save(state, tmp_path / "g.pt")
    for path in (tmp_path / "g.pt", work / CHECKPOINT_FILE):
        named = make(tmp_path / f"named-{path.stem}", checkpoint=str(path), steps=1000)
        named.fit(faces(), faces(4, seed=1))  # returns at once: 1000 steps would not be
        assert named.steps_done == 6
        assert torch.allclose(named.protect(batch).images, result.images)
    with pytest.raises(PluginError, match="no such file"):
        make(tmp_path / "missing", checkpoint=str(tmp_path / "nope.pt")).fit(faces(), faces(4))


def stop_after(n: int):
    """A progress wrapper that kills the training loop after ``n`` steps, as a Ctrl-C would."""
    def progress(iterable, **_):
        for i, item in enumerate(iterable):
            if i == n:
                raise KeyboardInterrupt
            yield item
    return progress


def test_training_resumes_from_checkpoint(tmp_path):
    # uninterrupted: 7 steps (the lr schedule spans the whole budget)
    whole = make(tmp_path / "whole", steps=7, lr_decay=0.5)
    whole.fit(faces(), faces(4))
    # killed after 4 steps (checkpoints every 3: step 4 is lost), then started again with the same budget
    part = make(tmp_path / "part", steps=7, lr_decay=0.5)
    part.context.progress = stop_after(4)
    with pytest.raises(KeyboardInterrupt):
        part.fit(faces(), faces(4))
    ckpt = torch.load(tmp_path / "part" / "work" / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["step"] == 3
    resumed = make(tmp_path / "part", steps=7, lr_decay=0.5)
    resumed.fit(faces(), faces(4))
    assert resumed.steps_done == 7
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    with open(tmp_path / "part" / "work" / "losses.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 7  # the history carries over too


def trained_weights(folder, seed: int, *, disturb: int = 0, threads: int = 1, **options) -> dict[str, torch.Tensor]:
    """G's and D's weights after a short training, with the caller's global RNG and thread count set first."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # what the harness, a Ray worker or a test may have set
    torch.manual_seed(disturb)  # what other plugins may have left in the global generator
    torch.rand(disturb + 1)
    try:
        pet = make(folder, seed=seed, steps=3, **options)
        pet.fit(faces(), faces(4))
        assert torch.get_num_threads() == threads  # the training put the caller's thread count back
    finally:
        torch.set_num_threads(before)
    ckpt = torch.load(folder / "work" / CHECKPOINT_FILE, weights_only=True)
    return {**{f"G.{k}": v for k, v in ckpt["generator"].items()}, **{f"D.{k}": v for k, v in ckpt["discriminator"].items()}}


def assert_same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_same_seed_gives_the_same_weights_whatever_the_global_rng_and_threads(tmp_path, precision):
    first = trained_weights(tmp_path / "a", 5, precision=precision)
    assert_same(first, trained_weights(tmp_path / "b", 5, disturb=17, threads=2, precision=precision))
    other = trained_weights(tmp_path / "c", 6, precision=precision)
    assert not all(torch.equal(first[k], other[k]) for k in first)  # the seed does matter
    assert not torch.are_deterministic_algorithms_enabled()  # the training put the caller's setting back


def test_seed_option_overrides_the_runs_seed_for_training_only(tmp_path):
    assert make(tmp_path, seed=3).train_config().seed == 3  # -1, the default: the run's seed
    run_seed_3 = make(tmp_path, seed=3).context
    assert PrivacyNet({**TINY, "seed": 7}, run_seed_3).train_config().seed == 7
    assert PrivacyNet({**TINY, "seed": 0}, run_seed_3).train_config().seed == 0  # 0 is a seed, not "unset"


def test_budget_gives_steps_and_batch_unless_set(tmp_path):
    cpu, gpu = make(tmp_path, steps=0, batch_size=0), make(tmp_path, steps=0, batch_size=0, budget="gpu")
    assert (cpu.steps, cpu.batch_size) == (BUDGETS["cpu"]["steps"], BUDGETS["cpu"]["batch_size"])
    assert (gpu.steps, gpu.batch_size) == (BUDGETS["gpu"]["steps"], BUDGETS["gpu"]["batch_size"])
    assert gpu.train_config().batch_size == BUDGETS["gpu"]["batch_size"]
    assert make(tmp_path, budget="paper", steps=5).steps == 5  # an explicit option wins
    with pytest.raises(PluginError, match="steps=-1 is negative"):
        make(tmp_path, steps=-1)
    with pytest.raises(PluginError, match="lr_decay"):
        make(tmp_path, lr_decay=1.5)


def test_learning_rate_is_constant_then_falls_linearly(tmp_path):
    trainer = Trainer(make(tmp_path, lr=1e-3, lr_decay=0.5).train_config(), torch.device("cpu"))
    rates = []
    for step in range(10):
        trainer.step = step
        rates.append(trainer.learning_rate(10))
    assert rates[:5] == [1e-3] * 5
    assert rates[5:] == pytest.approx([1e-3 * f for f in (1.0, 0.8, 0.6, 0.4, 0.2)])
    flat = Trainer(make(tmp_path, lr=1e-3, lr_decay=0.0).train_config(), torch.device("cpu"))
    flat.step = 9
    assert flat.learning_rate(10) == 1e-3


def test_dependencies_name_the_classifiers_and_the_matcher():
    assert PrivacyNet.dependencies({}) == [Dependency("classifier", "resnet-gender-probe", {}),
                                           Dependency("classifier", "cnn-gender", {}),
                                           Dependency("verifier", "faceapi-resnet", {})]
    assert PrivacyNet.dependencies({"classifier": "a + b", "matcher": "m"}) == [
        Dependency("classifier", "a", {}), Dependency("classifier", "b", {}), Dependency("verifier", "m", {})]


def test_options_are_checked(tmp_path):
    with pytest.raises(TypeError, match="needs a PluginContext"):
        PrivacyNet(TINY, None)
    with pytest.raises(PluginError, match="only gender"):
        make(tmp_path, obfuscate="gender,age")
    with pytest.raises(PluginError, match="multiple of 4"):
        make(tmp_path, size=30)
    with pytest.raises(PluginError, match="not trained"):
        make(tmp_path).protect(FaceBatch(torch.rand(1, 3, 32, 32), torch.tensor([1]), ["a"], ["a"]))


def test_shared_probe_pass_matches_separate_passes(tmp_path):
    ctx = make_context(tmp_path)

    class Probe(GenderClassifier):
        def __init__(self, embedder):
            super().__init__({}, ctx)
            self.embedder, self.weight, self.bias = embedder, torch.randn(24), torch.randn(1)

        def predict_male(self, images):
            return torch.sigmoid(self.embedder.embed(images) @ self.weight + self.bias)

    matcher = PoolMatcher({}, ctx)
    shared = AuxNets(Probe(matcher), matcher)
    separate = AuxNets(Probe(PoolMatcher({}, ctx)), matcher)
    separate.classifiers[0].weight, separate.classifiers[0].bias = shared.classifiers[0].weight, shared.classifiers[0].bias
    assert shared._shares_matcher(shared.classifiers[0]) and not separate._shares_matcher(separate.classifiers[0])
    x = torch.rand(3, 3, 32, 32)
    (la, ea), (lb, eb) = shared(x), separate(x)
    assert torch.allclose(la, lb, atol=1e-4) and torch.equal(ea, eb)


def test_ensemble_gives_one_logit_row_per_classifier(tmp_path):
    pet = make(tmp_path, classifier="stub-gender+stub-gender")
    logits, emb = pet.aux()(torch.rand(5, 3, 32, 32))
    assert logits.shape == (2, 5) and emb.shape[0] == 5
    assert torch.equal(logits[0], logits[1])
    with pytest.raises(PluginError, match="classifier is empty"):
        make(tmp_path, classifier=" + ").aux()


def test_random_views_are_seeded_differentiable_and_off_at_zero():
    x = torch.rand(6, 3, 32, 32, requires_grad=True)
    a = random_views(x, torch.Generator().manual_seed(1), 1.0)
    b = random_views(x, torch.Generator().manual_seed(1), 1.0)
    c = random_views(x, torch.Generator().manual_seed(2), 1.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)  # same seed, same views: input and output match
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert random_views(x, torch.Generator().manual_seed(1), 0.0) is x


def test_total_variation_penalises_texture_not_flat_changes():
    flat = torch.full((2, 3, 16, 16), 0.2)
    stripes = torch.zeros(2, 3, 16, 16)
    stripes[..., ::2] = 0.2
    assert torch.allclose(total_variation(flat), torch.zeros(2))
    assert (total_variation(stripes) > 0.15).all()


def test_weight_average_follows_the_warmed_up_recurrence(tmp_path):
    trainer = Trainer(make(tmp_path, ema=0.9).train_config(), torch.device("cpu"))
    data, aux = faces(), make(tmp_path).aux()
    images = (data.all(size=32).images * 255).to(torch.uint8)
    genders = torch.tensor([i % 2 for i in range(len(images))])
    expected = {k: v.clone() for k, v in trainer.G.named_parameters()}
    for _ in range(4):
        trainer.train_step(*trainer.sample(images, genders), aux)
        decay = min(0.9, (1 + trainer.step) / (10 + trainer.step))
        for k, live in trainer.G.named_parameters():
            expected[k] = decay * expected[k] + (1 - decay) * live.detach()
    for k, avg in trainer.G_ema.named_parameters():
        assert torch.allclose(avg, expected[k], atol=1e-6), k
        assert not avg.requires_grad
    assert trainer.output_generator is trainer.G_ema
    assert not all(torch.equal(a, b) for a, b in zip(trainer.G_ema.parameters(), trainer.G.parameters()))
    assert Trainer(make(tmp_path).train_config(), torch.device("cpu")).G_ema is None  # ema 0: G's last weights


def test_averaged_generator_protects_and_resumes(tmp_path):
    whole = make(tmp_path / "whole", steps=7, ema=0.5)
    whole.fit(faces(), faces(4))
    ckpt = torch.load(tmp_path / "whole" / "work" / CHECKPOINT_FILE, weights_only=True)
    for k, v in whole.G.state_dict().items():  # the PET protects with the average, not the last iterate
        assert torch.equal(v, ckpt["generator_ema"][k]), k
    assert not all(torch.equal(v, ckpt["generator"][k]) for k, v in whole.G.state_dict().items())
    part = make(tmp_path / "part", steps=7, ema=0.5)
    part.context.progress = stop_after(4)
    with pytest.raises(KeyboardInterrupt):
        part.fit(faces(), faces(4))
    resumed = make(tmp_path / "part", steps=7, ema=0.5)
    resumed.fit(faces(), faces(4))
    assert_same(whole.state_dict(), resumed.state_dict())
    named = make(tmp_path / "named", checkpoint=str(tmp_path / "whole" / "work" / CHECKPOINT_FILE))
    named.fit(faces(), faces(4))
    assert_same(whole.state_dict(), named.state_dict())
