"""PriDSS's best-candidate selection, shared by both backends."""

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
