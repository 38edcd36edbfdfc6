"""PriDSS latent backend on tiny random StyleGAN2 / FusionNet stand-ins (no official weights here).

These check the plumbing (formats, S space, blending, selection, batching),
never the quality of the paper's results.
"""

from __future__ import annotations

import pytest
import torch

from sbpet_bench.api import FEMALE, MALE, FaceBatch, GenderClassifier, PluginError, Verifier
from sbpet_bench.testing import make_context
from sbpet_pridss.latent.assets import ASSETS, E4E, GENERATOR, STYLEFUSION
from sbpet_pridss.latent.backend import LatentBackend
from sbpet_pridss.plugin import PriDSS
from sbpet_pridss.latent.fusion_net import (CANDIDATE, HIERARCHY_FFHQ, ORIGINAL, PRIDSS_SOURCES, FusionNet, Hierarchy,
                                            LatentBlender, pridss_codes)
from sbpet_pridss.latent.stylegan2 import Generator, SCode

TINY_CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: thread hand-offs cost more than the work on a loaded CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    gen = Generator(size=32, style_dim=32, n_mlp=2, channels=TINY_CHANNELS)
    with torch.no_grad():  # rosinality initialises these to zero; make them matter
        for name, p in gen.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith("to_rgb1.bias"):
                p.normal_(0, 0.1)
    return gen.eval()


def tiny_fusion(seed: int) -> FusionNet:
    torch.manual_seed(seed)
    return FusionNet(width=32, index_bits=2, hidden=48).eval()  # official common_layers=5


def saturate(net: FusionNet, value: float) -> FusionNet:
    """Force every blend mask to 0 (value < 0) or 1 (value > 0)."""
    with torch.no_grad():
        for blender in (net.blender_common, net.blender_segments):
            blender.disentangle_net[-1].bias.fill_(value)
    return net


class ColourClassifier(GenderClassifier):
    """P(male) from the red-blue balance: deterministic, image-dependent."""

    name = "colour"

    def predict_male(self, images):
        return torch.sigmoid(40 * (images[:, 0] - images[:, 2]).mean((1, 2)))


class PixelVerifier(Verifier):
    name = "pixels"

    def embed(self, images):
        e = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
        return torch.nn.functional.normalize(e - 0.5, dim=1)


@pytest.fixture()
def stand_ins(tmp_path):
    """Stand-in weight files in the official formats, and a model_path resolving them."""
    files = {GENERATOR: tmp_path / "g.pt"}
    gen = tiny_generator()
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.zeros(32)}, files[GENERATOR])
    for k, (node, asset) in enumerate(STYLEFUSION.items()):
        files[asset] = tmp_path / f"{node}.pt"
        torch.save(tiny_fusion(10 + k).state_dict(), files[asset])

    def model_path(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(f"no stand-in for {name}")
        return str(files[name])
    return gen, model_path


def plugin_for(tmp_path, model_path, **opts) -> PriDSS:
    """The PriDSS plugin on its latent backend, with the stand-ins behind ``model_path``."""
    bare = make_context(tmp_path / "work")  # the stand-ins' own context
    ctx = make_context(tmp_path / "work", plugins={"colour": ColourClassifier({}, bare), "pixels": PixelVerifier({}, bare)},
                       model_path=model_path)
    base = {"m": 3, "classifier": "colour", "verifier": "pixels", "seed": 0, "chunk": 5}
    plugin = PriDSS({"backend": "latent", **base, **opts}, ctx)
    assert isinstance(plugin.backend, LatentBackend)
    return plugin


def rosinality_keys(size: int, n_mlp: int) -> set[str]:
    """The g_ema key names of rosinality/stylegan2-pytorch's Generator, written from its naming scheme."""
    keys = {"input.input"} | {f"style.{i}.{p}" for i in range(1, n_mlp + 1) for p in ("weight", "bias")}

    def styled(prefix, upsample):
        ks = {f"{prefix}.conv.weight", f"{prefix}.conv.modulation.weight", f"{prefix}.conv.modulation.bias",
              f"{prefix}.noise.weight", f"{prefix}.activate.bias"}
        return ks | ({f"{prefix}.conv.blur.kernel"} if upsample else set())

    def rgb(prefix, upsample):
        ks = {f"{prefix}.conv.weight", f"{prefix}.conv.modulation.weight", f"{prefix}.conv.modulation.bias", f"{prefix}.bias"}
        return ks | ({f"{prefix}.upsample.kernel"} if upsample else set())
    keys |= styled("conv1", False) | rgb("to_rgb1", False)
    n_blocks = size.bit_length() - 3
    for j in range(n_blocks):
        keys |= styled(f"convs.{2 * j}", True) | styled(f"convs.{2 * j + 1}", False) | rgb(f"to_rgbs.{j}", True)
    return keys | {f"noises.noise_{i}" for i in range(2 * n_blocks + 1)}


# ----------------------------------------------------------------------------- generator


def test_rosinality_checkpoint_loads_by_key_names(stand_ins, tmp_path):
    gen, model_path = stand_ins
    assert set(gen.state_dict()) == rosinality_keys(32, 2)
    loaded = Generator.load(model_path(GENERATOR))
    assert (loaded.size, loaded.style_dim, loaded.n_mlp, loaded.n_latent) == (32, 32, 2, 8)
    assert loaded.channels == TINY_CHANNELS
    z = torch.randn(2, 32)
    assert torch.equal(loaded(z=z), gen(z=z))
    ffhq = Generator(1024)  # the official FFHQ config-f layout
    assert set(ffhq.state_dict()) == rosinality_keys(1024, 8)
    assert ffhq.n_latent == 18 and ffhq.state_dict()["convs.15.conv.weight"].shape == (1, 32, 32, 3, 3)
    torch.save({"g_ema": {"input.input": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        Generator.load(str(tmp_path / "bad.pt"))


def test_generation_from_s_equals_from_w_and_w_plus():
    gen = tiny_generator()
    z = torch.randn(3, 32)
    w = gen.mapping(z)
    img_w = gen(w=w)
    assert img_w.shape == (3, 3, 32, 32) and img_w.dtype == torch.float32
    torch.testing.assert_close(gen.synthesize(gen.styles(w)), img_w)
    torch.testing.assert_close(gen(w=gen.w_plus(w).clone()), img_w)
    # z with truncation is w pulled towards the mean
    mean = gen.mean_latent(256, torch.Generator().manual_seed(0))
    torch.testing.assert_close(gen(z=z, truncation=0.5, mean=mean), gen(w=mean + 0.5 * (w - mean)))
    # S layout: styles per layer, widths = each layer's input channels
    s = gen.styles(w)
    assert [t.shape[1] for t in s.conv] == gen.s_shapes().conv == [32, 32, 32, 32, 16, 16, 16]
    assert [t.shape[1] for t in s.rgb] == [32, 32, 16, 16]
    # w+ latent k drives exactly the layers rosinality assigns to it (conv1: 0, to_rgb1: 1, convs.i: i+1, to_rgbs.j: 2j+3)
    wp = gen.w_plus(w).clone()
    wp[:, 3] += 1
    s2 = gen.styles(wp)
    changed = {("conv", i) for i, (a, b) in enumerate(zip(s.conv, s2.conv)) if not torch.equal(a, b)} | \
              {("rgb", i) for i, (a, b) in enumerate(zip(s.rgb, s2.rgb)) if not torch.equal(a, b)}
    assert changed == {("conv", 3), ("rgb", 1)}
    # editing S changes the image; constant noise makes generation deterministic
    s3 = s.map(torch.clone)
    s3.conv[3] += 0.5
    assert not torch.allclose(gen.synthesize(s3), img_w)
    torch.testing.assert_close(gen(w=w), img_w)


def test_generator_batched_equals_unbatched():
    gen = tiny_generator()
    w = gen.mapping(torch.randn(4, 32))
    torch.testing.assert_close(torch.cat([gen(w=w[i : i + 1]) for i in range(4)]), gen(w=w), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- fusion


def test_blend_mask_zero_or_one_returns_an_input():
    a, b, extra = torch.randn(4, 32), torch.randn(4, 32), torch.randn(4, 32)
    blender = LatentBlender(32, index_bits=2, extras=1, hidden=48)
    with torch.no_grad():
        blender.disentangle_net[-1].bias.fill_(1e6)
        torch.testing.assert_close(blender(a, b, 2, extra=extra), b)
        blender.disentangle_net[-1].bias.fill_(-1e6)
        torch.testing.assert_close(blender(a, b, 2, extra=extra), a)
        blender.disentangle_net[-1].bias.zero_()
        mixed = blender(a, b, 2, extra=extra)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    assert bool(((mixed >= lo - 1e-6) & (mixed <= hi + 1e-6)).all()) and not torch.allclose(mixed, a)


def test_fusion_net_masks_select_codes():
    gen = tiny_generator()
    s0, s1, common = (gen.styles(gen.mapping(torch.randn(2, 32))) for _ in range(3))
    with torch.no_grad():
        zero = saturate(tiny_fusion(1), -1e6)(s0, s1, common)
        for got, want in zip(zero.conv + zero.rgb, s0.conv + s0.rgb):
            torch.testing.assert_close(got, want)
        one = saturate(tiny_fusion(1), 1e6)(s0, s1, common)  # common layers: common code; later layers: s1
    for i, (got, c, b) in enumerate(zip(one.conv, common.conv, s1.conv)):
        torch.testing.assert_close(got, c if i < 5 else b)
    # a mixed mask is channel-wise: each output channel lies between the inputs' pooled values
    free = tiny_fusion(2)
    with torch.no_grad():
        out = free(s0, s1, common)
    assert [t.shape for t in out.conv] == [t.shape for t in s0.conv]


def reference_fusion(net: FusionNet, s0: SCode, s1: SCode, common: SCode) -> SCode:
    """The official algorithm, one layer at a time (nearest upsampling to the width, max pooling back)."""
    up = lambda x: torch.nn.functional.interpolate(x[:, None], size=net.width, mode="nearest")[:, 0]  # noqa: E731
    pool = lambda x, ch: torch.nn.functional.max_pool1d(x[:, None], net.width // ch)[:, 0]  # noqa: E731
    out = [[], []]
    for kind, lists in enumerate(((s0.conv, s1.conv, common.conv), (s0.rgb, s1.rgb, common.rgb))):
        for i, (a, b, c) in enumerate(zip(*lists)):
            ch = a.shape[1]
            if i >= net.common_layers:
                x = net.blender_segments(up(a), up(b), i, extra=torch.zeros_like(up(c)))
            else:
                x0 = up(pool(net.blender_common(up(a), up(c), i), ch))
                x1 = up(pool(net.blender_common(up(b), up(c), i), ch))
                x = net.blender_segments(x0, x1, i, extra=up(c))
            out[kind].append(pool(x, ch))
    return SCode(*out)


def test_fusion_net_batched_layers_equal_the_per_layer_algorithm():
    gen = tiny_generator()
    s0, s1, common = (gen.styles(gen.mapping(torch.randn(3, 32))) for _ in range(3))
    net = tiny_fusion(4)
    with torch.no_grad():
        got, want = net(s0, s1, common), reference_fusion(net, s0, s1, common)
    for g, w in zip(got.conv + got.rgb, want.conv + want.rgb):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got.conv[0], s0.conv[0])


def test_hierarchy_routes_pridss_segments():
    gen = tiny_generator()
    orig, cand = (gen.styles(gen.mapping(torch.randn(2, 32))) for _ in range(2))
    nets = {node: saturate(tiny_fusion(k), -1e6) for k, node in enumerate(HIERARCHY_FFHQ)}
    hierarchy = Hierarchy(nets)
    codes = pridss_codes(orig, cand, hierarchy)
    assert set(codes) == set(PRIDSS_SOURCES)
    for node, code in codes.items():
        assert code is (cand if node in ("all", "skin") else orig), node
    assert {n for n, s in PRIDSS_SOURCES.items() if s == ORIGINAL} >= {"eyes", "mouth", "hair", "bg"}
    assert {n for n, s in PRIDSS_SOURCES.items() if s == CANDIDATE} == {"all", "skin"}
    with torch.no_grad():  # masks 0 everywhere: child1 all the way down (all -> face -> skin_mouth -> mouth)
        fused = hierarchy.fuse(codes)
        torch.testing.assert_close(fused.conv[0], orig.conv[0])
        codes["mouth"] = cand
        torch.testing.assert_close(hierarchy.fuse(codes).conv[0], cand.conv[0])


def test_fusion_net_official_layout_and_stand_in_loading(tmp_path):
    official = FusionNet()
    state = official.state_dict()
    assert state["blender_common.disentangle_net.0.weight"].shape == (2560, 2 * 512 + 10 * 19)
    assert state["blender_segments.disentangle_net.0.weight"].shape == (2560, 3 * 512 + 10 * 19)
    assert state["blender_segments.disentangle_net.4.weight"].shape == (512, 512)
    net = tiny_fusion(3)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "n.pt")
    loaded = FusionNet.load(str(tmp_path / "n.pt"))
    assert (loaded.width, loaded.blender_common.index_bits) == (32, 2)
    gen = tiny_generator()
    s = [gen.styles(gen.mapping(torch.randn(1, 32))) for _ in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(loaded(*s).conv[4], net(*s).conv[4])


# ----------------------------------------------------------------------------- backend


def _synthetic_batch(gen: Generator, n: int = 4, seed: int = 5):
    w = gen.mapping(torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        images = ((gen(w=w) + 1) / 2).clamp(0, 1)
    genders = torch.tensor([MALE, FEMALE] * (n // 2))
    ids = [f"s{i}" for i in range(n)]
    return FaceBatch(images, genders, [f"p{i}" for i in range(n)], ids), w


def _latents_file(tmp_path, ids, w):
    torch.save({"ids": list(ids), "w": w.detach()}, tmp_path / "latents.pt")
    return str(tmp_path)


def test_backend_selects_lowest_pic_of_opposite_gender_candidates(stand_ins, tmp_path):
    gen, model_path = stand_ins
    batch, w = _synthetic_batch(gen)
    plugin = plugin_for(tmp_path, model_path, latents=_latents_file(tmp_path, batch.ids, w))
    result = plugin.protect(batch)
    assert result.images.shape == batch.images.shape and result.images.dtype == torch.float32
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert len(result.diagnostics) == 4
    for d, g in zip(result.diagnostics, batch.genders.tolist()):
        assert d["backend"] == "latent" and d["original_code"] == "latents" and d["passed_through"] is False
        assert all((p > 0.5) == (g == FEMALE) for p in d["candidate_p_male"])  # opposite gender only
        pic = torch.tensor(d["pic"])
        torch.testing.assert_close(pic, (2 * torch.tensor(d["p_male"]) - 1).abs() - torch.tensor(d["similarity"]),
                                   atol=2e-6, rtol=0)
        assert d["chosen"] == int(pic.argmin()) and len(pic) == 3
    # the output is the chosen fusion, re-rendered independently
    with torch.no_grad():
        backend = plugin.backend
        orig, _ = backend.original_codes(batch)
        cand_w, _, _ = backend.sample_candidates(batch.ids, plugin.draws(batch.ids, batch.genders), 32, 32)
        fused = backend._render(backend.fuse_codes(orig, cand_w), 32, 32).view(4, 3, 3, 32, 32)
    chosen = torch.tensor([d["chosen"] for d in result.diagnostics])
    torch.testing.assert_close(result.images, fused[torch.arange(4), chosen], atol=1e-5, rtol=0)
    assert not torch.allclose(result.images, batch.images, atol=1e-3)


def test_backend_batched_equals_unbatched(stand_ins, tmp_path):
    gen, model_path = stand_ins
    batch, w = _synthetic_batch(gen)
    plugin = plugin_for(tmp_path, model_path, latents=_latents_file(tmp_path, batch.ids, w))
    whole = plugin.protect(batch)
    parts = [plugin.protect(FaceBatch(batch.images[i : i + 1], batch.genders[i : i + 1], batch.identities[i : i + 1],
                                       batch.ids[i : i + 1])) for i in range(4)]
    torch.testing.assert_close(torch.cat([p.images for p in parts]), whole.images, atol=1e-4, rtol=0)
    for p, d in zip(parts, whole.diagnostics):
        assert p.diagnostics[0]["chosen"] == d["chosen"]
        assert p.diagnostics[0]["candidate_p_male"] == pytest.approx(d["candidate_p_male"], abs=1e-4)


def test_backend_without_latents_or_e4e_says_what_to_do(stand_ins, tmp_path):
    gen, model_path = stand_ins
    batch, _ = _synthetic_batch(gen, n=2)
    plugin = plugin_for(tmp_path, model_path)
    with pytest.raises(PluginError, match=f"sbpet models add {E4E}"):
        plugin.protect(batch)
    missing = plugin_for(tmp_path, lambda name: (_ for _ in ()).throw(FileNotFoundError("not in the store")))
    with pytest.raises(PluginError, match=GENERATOR):
        missing.protect(batch)


def test_assets_are_official_only_without_invented_checksums():
    names = {a.name for a in ASSETS}
    assert names == {GENERATOR, E4E, *STYLEFUSION.values()}
    for asset in ASSETS:
        assert asset.official_only and asset.sha256 == "" and asset.sources[0].startswith("https://github.com/")


# ----------------------------------------------------------------------------- originals


def test_stylegan2_source_synthesizes_a_balanced_set_the_backend_reproduces(stand_ins, tmp_path):
    import numpy as np
    from PIL import Image

    from sbpet_pridss.latent.source import StyleGAN2Source, synthesize_dataset

    gen, model_path = stand_ins
    out = synthesize_dataset(tmp_path / "synth", gen, ColourClassifier({}, make_context(tmp_path)).predict_male, per_class=3, size=32, seed=1,
                             batch_size=8)
    source = StyleGAN2Source({}, make_context(tmp_path))
    assert source.detect(str(out)) and not source.detect(str(tmp_path))
    records, skipped = source.read(str(out))
    assert skipped == [] and sorted(r.gender for r in records) == [0, 0, 0, 1, 1, 1]
    assert len({r.identity for r in records}) == 6
    # the stored latents reproduce the written images, and their labels agree with the classifier
    backend = plugin_for(tmp_path, model_path, latents=str(out)).backend
    images = torch.stack([torch.from_numpy(np.array(Image.open(r.path).convert("RGB"))).permute(2, 0, 1).float() / 255
                          for r in records])
    batch = FaceBatch(images, torch.tensor([r.gender for r in records]), [r.identity for r in records],
                      [r.id for r in records])
    with torch.no_grad():
        codes, how = backend.original_codes(batch)
        rendered = backend._render(codes, 32, 32)
    assert how == ["latents"] * 6
    assert float((rendered - images).abs().max()) <= 1 / 255 + 1e-4
    assert ((ColourClassifier({}, make_context(tmp_path)).predict_male(images) > 0.5).long() == batch.genders).all()


def test_e4e_checkpoint_loads_and_inverts(tmp_path):
    from sbpet_pridss.latent.e4e import E4EInverter, Encoder4Editing

    official = Encoder4Editing()  # the official IR-SE-50 layout: names of the e4e checkpoint
    names = set(official.state_dict())
    assert {"input_layer.0.weight", "body.23.res_layer.5.fc2.weight", "body.3.shortcut_layer.0.weight",
            "styles.17.convs.10.weight", "styles.0.linear.weight", "latlayer1.weight", "latlayer2.bias"} <= names
    assert official.taps == (6, 20, 23) and len(official.body) == 24
    del official
    tiny = dict(stages=((16, 16, 1), (16, 16, 1), (16, 32, 1), (32, 32, 1)), width=32)
    torch.manual_seed(0)
    enc = Encoder4Editing(8, **tiny).eval()
    avg = torch.randn(32)
    ckpt = {"state_dict": {f"encoder.{k}": v for k, v in enc.state_dict().items()}, "latent_avg": avg,
            "opts": {"stylegan_size": 32, "encoder_type": "Encoder4Editing"}}
    torch.save(ckpt, tmp_path / "e4e.pt")
    inverter = E4EInverter.from_checkpoint(torch.load(tmp_path / "e4e.pt", weights_only=True), torch.device("cpu"), **tiny)
    images = torch.rand(2, 3, 40, 40)
    w = inverter.invert(images)
    assert w.shape == (2, 8, 32)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(images, size=(256, 256), mode="bilinear", antialias=True) * 2 - 1
        torch.testing.assert_close(w, enc(x) + avg)
    torch.testing.assert_close(inverter.invert(images[:1]), w[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not an e4e checkpoint"):
        E4EInverter.from_checkpoint({"state_dict": {}}, torch.device("cpu"))
