"""The from-scratch CNN gender classifier: learns a cue, stays differentiable, round-trips its state."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from sbpet_bench.api import PluginError
from sbpet_bench.testing import InMemoryFaceSet, make_context
from sbpet_weightfree.cnn import CnnGender
from synthetic_faces import tinted


def test_learns_a_cue_and_round_trips(tmp_path):
    clf = CnnGender({"width": 8, "epochs": 6, "batch_size": 16}, make_context(tmp_path, seed=1))
    with pytest.raises(PluginError, match="not fitted"):
        clf.predict_male(torch.rand(1, 3, 48, 48))
    clf.fit(tinted(96, seed=0))
    test = tinted(40, seed=5).all()
    p = clf.predict_male(test.images)
    assert roc_auc_score(test.genders.numpy(), p.numpy()) > 0.9

    x = test.images[:4].clone().requires_grad_(True)
    clf.logits(x).sum().backward()  # differentiable in the images, frozen in its weights
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in clf.net.parameters())

    again = CnnGender({"width": 8}, make_context(tmp_path, seed=1))
    again.load_state_dict(clf.state_dict())
    assert torch.allclose(again.predict_male(test.images), p)


def test_needs_both_genders(tmp_path):
    one = InMemoryFaceSet(torch.rand(4, 3, 32, 32), [1, 1, 1, 1], ["a", "b", "c", "d"])
    with pytest.raises(PluginError, match="both genders"):
        CnnGender({}, make_context(tmp_path)).fit(one)
