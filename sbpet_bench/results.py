"""The results.json contract: its typed shape, its one writer and its one loader.

``sbpet run`` writes results.json and everything else (leaderboards, the HTML
report, ``sbpet report``'s merge, third-party tools) reads it, so its shape is
declared once, here, as TypedDicts. ``docs/results.schema.json`` (JSON Schema
2020-12) is generated from them (``python -m sbpet_bench.results``) and a test
keeps the two equal. Readers that are not Python use the schema file.

JSON has no NaN: the writer turns an undefined number (an FNMR where the FMR
cannot be reached) into null, and numpy or torch values into plain ones, and
writes strict JSON only. The loader checks the document against the schema
(with :mod:`.typed_schema`'s checker, no library needed at run time), so a
damaged or foreign file fails with the file's name and the first wrong field,
not later with a ``KeyError`` deep in a report.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict, Union

import numpy as np

from .cache import atomic_write_bytes
from .typed_schema import check, object_schema

SCHEMA_NAME = "sbpet-results"
SCHEMA_VERSION = 1  # bump only when a field changes meaning or a required field goes; new optional fields keep it
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class ResultsError(ValueError):
    """A file is not a results file this sbpet can read."""


def doc(text: str) -> str:
    """Marks an ``Annotated`` field's description (it becomes the schema's ``description``)."""
    return text


Number = Annotated[Union[float, None], doc("a number; null where it is undefined (NaN in the computation)")]


# --------------------------------------------------------------------------- the sections


class ErrorEntry(TypedDict, total=False):
    """A plugin failure, reported by name and stage; the run went on without it."""

    plugin: str
    kind: str
    stage: Annotated[str, doc("load, fit, run, or 'compute <condition>' for metrics")]
    batch: Annotated[Union[int, None], doc("the batch it failed on; null outside the batch loop")]
    message: str
    traceback: Annotated[str, doc("only for unexpected exceptions")]


class _MetricValueRequired(TypedDict):
    metric: Annotated[str, doc("e.g. auc, privacy_auc, worst_privacy_auc, eer, kid")]
    value: Number


class MetricValue(_MetricValueRequired, total=False):
    """One leaderboard number with its convention (sbpet_bench.api.MetricValue as JSON)."""

    evaluator: Annotated[str, doc("the classifier, verifier or featurizer that produced it ('' if none)")]
    higher_is_better: Annotated[Union[bool, None], doc("null: neither (e.g. a raw AUC)")]
    ci_low: Number
    ci_high: Number
    n: Union[int, None]
    protocol: str
    convention: Annotated[str, doc("one sentence on how it is computed")]
    extra: Annotated[dict[str, Any], doc("details: curves, tier, p_value, pairs_sha256, in_sample, ...")]


class _ConditionRequired(TypedDict):
    pet: Annotated[str, doc("a PET spec, or 'original'")]
    attacker: Annotated[str, doc("an attacker spec, or 'none'")]
    status: Annotated[str, doc("'ok' or 'failed'")]
    metrics: list[MetricValue]


class Condition(_ConditionRequired, total=False):
    """One row of the leaderboard: a PET's output, optionally after an attacker's recovery."""

    n_images: int
    n_failed_images: int
    errors: list[ErrorEntry]
    dropped_evaluators: Annotated[list[str], doc("evaluators that failed on this condition; its metrics leave them out")]
    from_runs: Annotated[list[str], doc("merged results: the runs (labels) this row came from")]
    run: Annotated[str, doc("merged results: the one run this row belongs to, when runs disagree")]


class SkippedFile(TypedDict, total=False):
    """An input file that was left out, and why."""

    path: str
    reason: str


class _DatasetRequired(TypedDict):
    fingerprint: Annotated[str, doc("a hash of every record (path, gender, identity): runs on equal data share it")]


class Dataset(_DatasetRequired, total=False):
    """The data a run used and how it was split."""

    path: str
    source: Annotated[str, doc("the dataset-source plugin that read it")]
    n_records: int
    n_eval: int
    n_train: int
    n_pool: int
    image_size: int
    skipped: list[SkippedFile]


class PluginRow(TypedDict, total=False):
    """A plugin instance of the run, with everything that keys its cache entries."""

    kind: str
    name: str
    version: str
    origin: Annotated[str, doc("the package or file it came from")]
    options: dict[str, Any]
    models: Annotated[dict[str, str], doc("model asset name -> sha256")]
    key: Annotated[str, doc("the cache key of this plugin and options")]
    trained_on: Annotated[str, doc("set when it was fitted on other images than the training split")]


class Sample(TypedDict, total=False):
    """One evaluation image kept for the report's grid, with its scores under each condition."""

    id: str
    identity: str
    gender: Annotated[int, doc("the label: see sbpet_bench.api MALE/FEMALE")]
    images: Annotated[dict[str, str], doc("condition 'pet/attacker' -> PNG path relative to the run folder")]
    p_male: Annotated[dict[str, dict[str, Number]], doc("condition -> classifier -> P(male)")]
    similarity: Annotated[dict[str, dict[str, Number]], doc("condition -> verifier -> cosine similarity to the original")]
    diagnostics: Annotated[dict[str, dict[str, Any]], doc("condition -> what the PET reported for this image")]


class CacheStats(TypedDict, total=False):
    """How much of the run came from the cache."""

    hits: int
    misses: int
    rejected: Annotated[int, doc("misses whose entry was there but failed its checksum (recomputed)")]
    stale_removed: Annotated[int, doc("abandoned temporary files of killed writers that were deleted")]


class PlanStage(TypedDict, total=False):
    """One stage of the run's plan (fit, protect, recover, score): its tasks and how many the cache already held."""

    stage: str
    tasks: int
    cached: Annotated[int, doc("tasks found in the cache when the run started")]
    to_run: int
    images_to_compute: int


class Tiers(TypedDict, total=False):
    """Who attacks the privacy, by tier (see sbpet_bench.api TIERS)."""

    classifiers: Annotated[dict[str, list[str]], doc("tier -> the classifier keys in it (as in metrics' evaluator)")]
    informed_train_images: Annotated[int, doc("protected training images the informed classifiers learnt from")]
    in_sample: Annotated[dict[str, list[str]], doc("evaluator -> the PETs that use it internally (its numbers on them are in-sample)")]


class RunRef(TypedDict, total=False):
    """Merged results: one of the runs that were merged."""

    dir: str
    label: str
    created: Union[str, None]
    command: Union[list[str], None]
    git_commit: Union[str, None]


class _ResultsRequired(TypedDict):
    schema: Annotated[str, doc("'sbpet-results/<version>'")]
    sbpet_version: str
    created: Annotated[str, doc("ISO 8601 time of writing, UTC")]
    command: list[str]
    config: Annotated[dict[str, Any], doc("the run's settings (sbpet_bench.config.RunConfig) plus the evaluators, "
                                          "metrics, image size and device actually used")]
    dataset: Dataset
    plugins: list[PluginRow]
    conditions: list[Condition]


class Results(_ResultsRequired, total=False):
    """The whole of results.json, as written by ``sbpet run`` (or merged by ``sbpet report``)."""

    git_commit: Union[str, None]
    packages: Annotated[dict[str, str], doc("package -> version, and the python version")]
    samples: list[Sample]
    diagnostics_file: Annotated[str, doc("per-image diagnostics (JSON lines), relative to the run folder")]
    timings: Annotated[dict[str, float], doc("stage -> seconds")]
    cache: CacheStats
    errors: list[ErrorEntry]
    warnings: list[str]
    plan: list[PlanStage]
    tiers: Tiers
    alignment: Annotated[dict[str, Any], doc("how faces were aligned before the PETs, and how many could not be")]
    train_dataset: Annotated[Dataset, doc("the data evaluators and PETs were fitted on, when not the evaluation data's")]
    runs: Annotated[list[RunRef], doc("merged results: the runs that were merged")]


# --------------------------------------------------------------------------- the schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json, generated from :class:`Results`."""
    defs: dict[str, Any] = {}
    top = object_schema(Results, defs)
    top["properties"]["schema"] = {**top["properties"]["schema"], "pattern": f"^{SCHEMA_NAME}/[0-9]+$"}
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "sbpet results.json", **top, "$defs": dict(sorted(defs.items()))}


def schema_text() -> str:
    """``docs/results.schema.json`` exactly as it should read."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def validate_results(results: Any, limit: int = 20) -> list[str]:
    """What is wrong with a results document (at most ``limit`` lines, each naming the field); empty if nothing."""
    schema = json_schema()
    problems: list[str] = []
    check(results, schema, schema, "results", problems, limit)
    return problems


# --------------------------------------------------------------------------- writing and loading


def to_json_value(value: Any) -> Any:
    """A strict-JSON copy: numpy and torch values become Python ones, NaN and infinities become null,
    tuples lists, paths strings and dict keys strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "tolist"):  # numpy and torch alike
        return to_json_value(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def json_text(value: Any, indent: int | None = None) -> str:
    """sbpet's one JSON writer: strict JSON of :func:`to_json_value`'s copy (NaN and infinities null).

    Results, diagnostics and cached metric values all go through it, so no file holds a bare NaN
    (which strict JSON readers, browsers among them, reject) and a value reads back as it was written.
    """
    return json.dumps(to_json_value(value), indent=indent, ensure_ascii=False, allow_nan=False)


def write_results(path: str | Path, results: Any) -> Results:
    """Write ``results`` to ``path`` (a file, or a folder for ``<folder>/results.json``) as strict JSON, atomically.

    Returns the document as written (what :func:`load_results` will read back).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    text = json_text(results, indent=1) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return json.loads(text)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_results(path: str | Path, *, validate: bool = True) -> Results:
    """Read a results.json (or a run folder holding one); :class:`ResultsError` names the file and what is wrong.

    Refuses files that are not sbpet results, that a newer sbpet wrote (a higher schema
    version), and (with ``validate``) documents that do not match :func:`json_schema`.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "results.json").is_file():
            raise ResultsError(f"{path}: no results.json in this folder (is it a folder written by `sbpet run`?)")
        path = path / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file (expected the results.json that `sbpet run` writes)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read it: {exc}") from exc
    try:
        results = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise ResultsError(f"{path}: not a results file: it is not valid JSON ({exc})") from exc
    tag = results.get("schema") if isinstance(results, dict) else None
    match = re.fullmatch(rf"{SCHEMA_NAME}/(\d+)", tag) if isinstance(tag, str) else None
    if match is None:
        raise ResultsError(f"{path}: not an sbpet results file (its 'schema' is {tag!r}, expected {SCHEMA!r}); "
                           "point at the results.json that `sbpet run` or `sbpet report` writes")
    if int(match[1]) > SCHEMA_VERSION:
        raise ResultsError(f"{path}: written by a newer sbpet (schema {tag}; this sbpet reads up to {SCHEMA}); "
                           "upgrade sbpet to read it")
    if validate:
        problems = validate_results(results)
        if problems:
            raise ResultsError(f"{path}: not a valid results file:\n  " + "\n  ".join(problems))
    return results


if __name__ == "__main__":  # python -m sbpet_bench.results > docs/results.schema.json
    sys.stdout.write(schema_text())
