"""PrivacyProber recovery attacks: shapes, training, denoising, state round trip."""

import pytest
import torch

from sbpet_bench.api import PluginError
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_privacyprober import sbpet_register_attackers
from sbpet_privacyprober.attackers import PPAutoencoder, PPDenoiser, PPInpainter, PPNonLocalMeans, noise_sigma
from sbpet_privacyprober.degrade import KINDS, patch_masks, random_degradation



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small nets: one thread is faster and leaves the other core free (restored after, for the other tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
TINY = {"steps": 4, "batch_size": 4, "width": 8}
LEARNED = (PPAutoencoder, PPDenoiser, PPInpainter)


@pytest.fixture(scope="module")
def faces(lfw3d):
    return load_lfw3d_sample(per_class=24, root=lfw3d)


@pytest.fixture(scope="module")
def held_out(lfw3d):
    return load_lfw3d_sample(per_class=6, root=lfw3d, skip=24)


def test_registered_names():
    assert {cls.name for cls in sbpet_register_attackers()} == {"pp-a", "pp-d", "pp-d-nlm", "pp-i"}


@pytest.mark.parametrize("cls", LEARNED)
def test_recover_keeps_shape_and_range(cls, faces, tmp_path):
    attacker = cls(TINY, make_context(tmp_path))
    with pytest.raises(PluginError, match="before fit"):
        attacker.recover(faces.images[:2])
    attacker.fit(faces)
    for images in (faces.images[:5], faces.images[:3, :, :64, :48]):  # native 90x90 and an odd size
        out = attacker.recover(images)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
        assert not torch.equal(out, images)


@pytest.mark.parametrize("cls", [PPAutoencoder, PPInpainter])  # pp-d: see the stronger test below
def test_training_lowers_the_loss(cls, faces, held_out, tmp_path):
    attacker = cls({"steps": 80, "batch_size": 8, "width": 8, "lr": 3e-3}, make_context(tmp_path))

    def held_out_loss() -> float:  # same images, same random degradations/masks before and after
        with torch.no_grad():
            return float(attacker.training_loss(held_out.all(64).images, torch.Generator().manual_seed(3)))

    before = held_out_loss()
    attacker.fit(faces)
    assert len(attacker.losses) == 80
    assert held_out_loss() < 0.8 * before


def test_trained_denoiser_beats_the_noisy_input(faces, held_out, tmp_path):
    attacker = PPDenoiser({"steps": 60, "batch_size": 8, "width": 12, "degradations": "noise", "max_noise": 0.2},
                          make_context(tmp_path))
    attacker.fit(faces)
    clean = held_out.images
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    mse_noisy = (noisy - clean).pow(2).mean()
    mse_recovered = (attacker.recover(noisy) - clean).pow(2).mean()
    assert mse_recovered < 0.7 * mse_noisy


def test_non_local_means_denoises_without_training(held_out, tmp_path):
    clean = held_out.images
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    out = PPNonLocalMeans({}, make_context(tmp_path)).recover(noisy)
    assert out.shape == noisy.shape
    assert (out - clean).pow(2).mean() < 0.6 * (noisy - clean).pow(2).mean()
    # On clean faces the automatic strength stays low, so the image barely changes.
    assert (PPNonLocalMeans({}, make_context(tmp_path)).recover(clean) - clean).abs().mean() < 0.02


@pytest.mark.parametrize("cls", LEARNED)
def test_state_dict_round_trip(cls, faces, tmp_path):
    trained = cls(TINY, make_context(tmp_path))
    trained.fit(faces)
    state = trained.state_dict()
    assert state and all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    restored = cls(TINY, make_context(tmp_path))
    restored.load_state_dict(state)
    assert torch.allclose(restored.recover(faces.images[:4]), trained.recover(faces.images[:4]), atol=1e-6)
    with pytest.raises(PluginError, match="does not match"):
        cls({**TINY, "width": 16}, make_context(tmp_path)).load_state_dict(state)


def test_bad_options_fail_clearly(tmp_path):
    with pytest.raises(PluginError, match="degradations"):
        PPDenoiser({"degradations": "noise,rain"}, make_context(tmp_path))
    with pytest.raises(ValueError, match="square number"):
        PPInpainter({"groups": 3}, make_context(tmp_path))


def test_masks_partition_the_image():
    masks = patch_masks(64, 8, 4, (3, 5))
    assert masks.shape == (4, 1, 64, 64)
    assert torch.equal(masks.sum(0), torch.ones(1, 64, 64))
    assert all(abs(m.mean().item() - 0.25) < 0.05 for m in masks)


def test_degradations_change_every_image_and_stay_in_range():
    clean = torch.rand(16, 3, 32, 32)
    for kind in KINDS:
        out = random_degradation(clean, torch.Generator().manual_seed(0), (kind,))
        assert out.shape == clean.shape and out.min() >= 0 and out.max() <= 1
        assert ((out - clean).abs().flatten(1).mean(1) > 0).all(), kind


def test_noise_sigma_estimate():
    flat = torch.full((4, 3, 64, 64), 0.5)
    sigmas = torch.tensor([0.0, 0.02, 0.05, 0.1])
    est = noise_sigma(flat + sigmas[:, None, None, None] * torch.randn(flat.shape, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(est, sigmas, atol=0.01)
