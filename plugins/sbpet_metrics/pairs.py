"""Verification pairs: seeded mated/non-mated sampling per protocol, scores, hashes, and bootstrap weights."""

from __future__ import annotations

import base64
import hashlib
import zlib

import numpy as np

from .stats import normalise_rows, resample_counts

BASE_PROTOCOLS = ("protected-vs-original", "protected-vs-other-image")
SAME_GENDER = "same-gender"


def split_protocol(protocol: str) -> tuple[str, str]:
    """``"protected-vs-other-image/same-gender@male"`` -> (``"protected-vs-other-image"``, ``"same-gender"``).

    A probe-gender suffix (``@male``) selects a subset of a protocol's pairs and is ignored here.
    """
    base, _, variant = protocol.split("@")[0].partition("/")
    if base not in BASE_PROTOCOLS or variant not in ("", SAME_GENDER):
        raise ValueError(f"unknown verification protocol {protocol!r}; known: {', '.join(BASE_PROTOCOLS)}, optionally with /{SAME_GENDER}")
    return base, variant


def cosine_pairs(probe: np.ndarray, reference: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Cosine similarity of ``probe[a[k]]`` and ``reference[b[k]]`` for every pair k (rows unit-normalised first)."""
    p, r = normalise_rows(probe).astype(np.float32), normalise_rows(reference).astype(np.float32)
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), chunk):  # small chunks keep the gathered (chunk, D) copies in cache
        sl = slice(start, start + chunk)
        out[sl] = np.einsum("ij,ij->i", p[a[sl]], r[b[sl]])
    return out.astype(np.float64)


def mated_candidates(identities: np.ndarray, same_image: bool) -> tuple[np.ndarray, np.ndarray]:
    """All mated index pairs: each image with itself, or each *unordered* pair of images of one identity.

    Unordered because (a, b) and (b, a) are the same comparison on the originals and nearly the same on a
    protected condition: listing both would count one comparison twice and understate the uncertainty.
    """
    n = len(identities)
    if same_image:
        return np.arange(n), np.arange(n)
    _, codes, counts = np.unique(identities, return_inverse=True, return_counts=True)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    a_parts, b_parts = [], []
    for start, size in zip(starts[counts >= 2], counts[counts >= 2]):  # loop over identities, not images
        members = order[start : start + size]
        upper_a, upper_b = np.triu_indices(size, 1)
        a_parts.append(members[upper_a])
        b_parts.append(members[upper_b])
    if not a_parts:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(a_parts), np.concatenate(b_parts)


def sample_nonmated(identities: np.ndarray, count: int, rng: np.random.Generator,
                    groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` distinct unordered pairs of images of different identities, uniformly, in random orientation.

    With ``groups`` both images must share a group (e.g. a gender); negative groups (unknown) take no part.
    """
    n = len(identities)
    _, codes = np.unique(identities, return_inverse=True)
    group = np.zeros(n, int) if groups is None else np.asarray(groups, int)
    allowed = group >= 0
    _, joint = np.unique(np.stack([group, codes])[:, allowed], axis=1, return_inverse=True)
    possible = (np.sum(np.bincount(group[allowed]) ** 2) - np.sum(np.bincount(joint.ravel()) ** 2)) // 2

    def acceptable(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (codes[a] != codes[b]) & (group[a] == group[b]) & allowed[a] & allowed[b]

    if possible <= 4 * count and n <= 3000:  # small population: enumerate it exactly
        a, b = np.triu_indices(n, 1)
        keep = acceptable(a, b)
        a, b = a[keep], b[keep]
        pick = rng.permutation(len(a))[:count]
        a, b = a[pick], b[pick]
    else:
        keys = np.zeros(0, dtype=np.int64)
        for _ in range(50):  # rejection sampling; a few rounds suffice when the population is large
            cand = rng.integers(0, n, size=(3 * count, 2))
            cand = cand[acceptable(cand[:, 0], cand[:, 1])]
            lo, hi = cand.min(axis=1).astype(np.int64), cand.max(axis=1).astype(np.int64)
            keys = np.concatenate([keys, lo * n + hi])
            _, first = np.unique(keys, return_index=True)
            keys = keys[np.sort(first)]  # distinct, in drawing order
            if len(keys) >= count:
                break
        keys = keys[:count]
        a, b = keys // n, keys % n
    flip = rng.random(len(a)) < 0.5  # which image is the probe carries no meaning: pick at random
    return np.where(flip, b, a), np.where(flip, a, b)


def sample_pairs(identities: np.ndarray, protocol: str, n_mated: int, n_nonmated: int, rng: np.random.Generator,
                 genders: np.ndarray | None = None, nonmated_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (probe, reference, mated) pairs for a verification protocol (see :func:`split_protocol`).

    The mated pairs are drawn from ``rng`` first, then the non-mated ones from ``nonmated_rng`` (default
    ``rng``). ``.../same-gender`` draws non-mated pairs whose two images have the same (known) gender,
    which ``genders`` must then give; seeding ``rng`` as for the base protocol keeps the base's mated pairs.
    """
    nonmated_rng = rng if nonmated_rng is None else nonmated_rng
    base, variant = split_protocol(protocol)
    ma, mb = mated_candidates(identities, same_image=(base == "protected-vs-original"))
    pick = rng.permutation(len(ma))[:n_mated]
    ma, mb = ma[pick], mb[pick]
    if base == "protected-vs-other-image":
        flip = rng.random(len(ma)) < 0.5
        ma, mb = np.where(flip, mb, ma), np.where(flip, ma, mb)
    if variant == SAME_GENDER:
        if genders is None:
            raise ValueError(f"protocol {protocol!r} needs the images' genders")
        known = np.isin(genders, (0, 1))
        na, nb = sample_nonmated(identities, n_nonmated, nonmated_rng, groups=np.where(known, genders, -1))
    else:
        na, nb = sample_nonmated(identities, n_nonmated, nonmated_rng)
    a = np.concatenate([ma, na])
    b = np.concatenate([mb, nb])
    mated = np.concatenate([np.ones(len(ma), bool), np.zeros(len(na), bool)])
    return a, b, mated


def identity_pair_weights(counts: np.ndarray, code_a: np.ndarray, code_b: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """``(B, pairs)`` multiplicities of each pair when identities are resampled with ``counts`` ``(B, identities)``.

    A mated pair comes along with its identity (``c[id]`` copies); a non-mated pair needs both of its
    identities and comes ``c[a] * c[b]`` times (every copy of one against every copy of the other).
    Resampling identities keeps the pairs that share an image or a person together, which a pair
    bootstrap ignores; the two-way product is slightly conservative (wider, never narrower).
    """
    ca = counts[:, code_a]
    return np.where(mated[None, :], ca, ca * counts[:, code_b])


def identity_counts(identities: np.ndarray, b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(B, identities)`` bootstrap multiplicities of the distinct identities and each image's identity code."""
    names, codes = np.unique(identities, return_inverse=True)
    return resample_counts(rng, len(names), b), codes.ravel()


def pair_bootstrap_weights(mated: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """``(B, pairs)`` multiplicities of a bootstrap of pairs, mated and non-mated resampled separately."""
    w = np.zeros((b, len(mated)))
    for mask in (mated, ~mated):
        w[:, mask] = resample_counts(rng, int(mask.sum()), b)
    return w


def pairs_digest(ids: np.ndarray, a: np.ndarray, b: np.ndarray, mated: np.ndarray, protocol: str) -> str:
    """sha256 of the pairs by image id, comparable across runs and conditions."""
    lines = [protocol] + [f"{ids[x]}\t{ids[y]}\t{int(z)}" for x, y, z in zip(a, b, mated)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pack_pairs(a: np.ndarray, b: np.ndarray, mated: np.ndarray) -> str:
    """Pairs as base64(zlib(int32 little-endian rows of probe, reference, mated))."""
    rows = np.stack([a, b, mated.astype(int)], axis=1).astype("<i4")
    return base64.b64encode(zlib.compress(rows.tobytes(), 9)).decode("ascii")


def unpack_pairs(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i4").reshape(-1, 3)
    return rows[:, 0], rows[:, 1], rows[:, 2].astype(bool)
