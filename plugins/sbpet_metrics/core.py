"""Vectorised numpy cores of the metrics (no plugin API here), gathered in one namespace.

Score functions take arrays with an optional leading axis of bootstrap resamples, shaped ``(B, N)``,
and return one value per row: the point estimate is simply the one-row case, so estimates and
confidence intervals share code. The cores live in one module per seam:

- :mod:`.stats`: seeded generators, percentile and folded intervals, resampling, curve thinning;
- :mod:`.auc`: rank AUC, class-stratified shared bootstraps, vectorised permutation tests;
- :mod:`.rates`: FMR / FNMR / EER, plain and with bootstrap weights;
- :mod:`.pairs`: seeded verification pairs per protocol, identity and pair bootstrap weights;
- :mod:`.kernels`: Fréchet distance and KID.
"""

from __future__ import annotations

from .auc import (accuracy_at_half, auc_rows, bootstrap_auc, chance_privacy_auc, confidence, fold,  # noqa: F401
                  permutation_null_auc, permutation_p_value, privacy_p_values, stratified_indices)
from .kernels import disjoint_subsets, frechet_distance, frechet_from_moments, kid  # noqa: F401
from .pairs import (BASE_PROTOCOLS, SAME_GENDER, cosine_pairs, identity_counts, identity_pair_weights,  # noqa: F401
                    mated_candidates, pack_pairs, pair_bootstrap_weights, pairs_digest, sample_nonmated, sample_pairs,
                    split_protocol, unpack_pairs)
from .rates import (enough_nonmated, eer_rows, error_rate_curve, fnmr_at_fmr_rows, weighted_eer,  # noqa: F401
                    weighted_fnmr_at_fmr, weighted_fnmr_at_threshold, weighted_threshold_at_fmr,
                    weighted_thresholds_at_fmr)
from .stats import (downsample_curve, fold_interval, normalise_rows, percentile_ci, quantiles, resample_counts,  # noqa: F401
                    resample_indices, rng_for)
