"""PriDSS's best-candidate selection, shared by both backends: score every fusion, keep the lowest PIC.

The internal gender classifier gives each fusion's P(male), the internal recogniser its cosine
similarity SIM to the original; the privacy-identity criterion PIC = |2 P(male) - 1| - SIM is low
when the fusion's gender is ambiguous and its identity is kept.
"""

from __future__ import annotations

import torch


def privacy_identity_criterion(p_male: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """PIC = |2 P(male) - 1| - SIM: low when gender is ambiguous and identity is kept."""
    return (2.0 * p_male - 1.0).abs() - similarity


def select_lowest_pic(p_male: torch.Tensor, similarity: torch.Tensor,
                      eligible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, per original, the candidate with the lowest PIC.

    ``p_male`` and ``similarity`` are ``(B, M)``: B originals, M fused candidates each;
    ``eligible`` (B, M) bool, optional: only these compete (a row with none eligible uses all).
    Returns the chosen index per row ``(B,)`` and the full PIC matrix ``(B, M)``.
    """
    if p_male.shape != similarity.shape or p_male.dim() != 2:
        raise ValueError(f"expected two (B, M) tensors, got {tuple(p_male.shape)} and {tuple(similarity.shape)}")
    pic = privacy_identity_criterion(p_male, similarity)
    if eligible is None:
        return pic.argmin(dim=1), pic
    if eligible.shape != pic.shape:
        raise ValueError(f"eligible must be {tuple(pic.shape)}, got {tuple(eligible.shape)}")
    eligible = eligible.to(pic.device) | ~eligible.to(pic.device).any(1, keepdim=True)
    return torch.where(eligible, pic, torch.full_like(pic, float("inf"))).argmin(dim=1), pic


class MeanClassifier:
    """Several gender classifiers as one: P(male) is their mean, each scoring the whole batch at once."""

    def __init__(self, members):
        if not members:
            raise ValueError("MeanClassifier needs at least one classifier")
        self.members = list(members)

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([c.predict_male(images).float().cpu() for c in self.members]).mean(0)


def members(classifier) -> list:
    """The classifiers whose mean is ``classifier``'s P(male) (itself alone unless a :class:`MeanClassifier`)."""
    return list(classifier.members) if isinstance(classifier, MeanClassifier) else [classifier]


# Fusions scored at once: bounds memory whatever the batch size and M.
SCORE_CHUNK = 256


def shared_embedding_classifier(classifier, verifier):
    """``classifier.predict_male_from_embedding`` when the classifier embeds with this very
    verifier instance (duck-typed, no import of the classifier's plugin), else None."""
    from_embedding = getattr(classifier, "predict_male_from_embedding", None)
    if callable(from_embedding) and getattr(classifier, "embedder", None) is verifier:
        return from_embedding
    return None


def score_fusions(classifier, verifier, originals: torch.Tensor, fused: torch.Tensor,
                  reuse_embeddings: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """P(male) and SIM to the original (both (B, M), on the CPU) of (B, M, 3, H, W) fusions of (B, 3, H, W)
    originals, :data:`SCORE_CHUNK` fusions at a time."""
    b, m = fused.shape[:2]
    flat = fused.reshape(b * m, *fused.shape[2:])
    chunks = [flat[i : i + SCORE_CHUNK] for i in range(0, len(flat), SCORE_CHUNK)]
    # A classifier on the verifier's own embeddings (resnet-gender-probe on faceapi-resnet) reuses them:
    # each fusion then goes through the network once instead of twice. An ensemble's P(male) is its
    # members' mean, each member scoring the whole chunk.
    scorers = [(c, shared_embedding_classifier(c, verifier) if reuse_embeddings else None) for c in members(classifier)]
    p_parts, e_parts = [], []
    for c in chunks:
        e_c = verifier.embed(c)
        p_c = torch.stack([(from_embedding(e_c) if from_embedding is not None else clf.predict_male(c)).float().cpu()
                           for clf, from_embedding in scorers]).mean(0)
        p_parts.append(p_c)
        e_parts.append(e_c.float().cpu())
    p, e = torch.cat(p_parts), torch.cat(e_parts)
    e0 = verifier.embed(originals).float().cpu()
    return p.view(b, m), (e.view(b, m, -1) * e0.unsqueeze(1)).sum(-1)
