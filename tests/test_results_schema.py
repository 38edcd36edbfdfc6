"""results.json has one declared shape: the TypedDicts, the published JSON Schema, the writer and the loader agree,
and what `sbpet run` writes (and what is published under reports/) matches them."""

import copy
import json
import math
from pathlib import Path
from typing import get_type_hints

import jsonschema
import numpy as np
import pytest
import torch

from sbpet_bench.results import (SCHEMA, Condition, MetricValue, Results, ResultsError, json_schema, load_results,
                                 schema_text, validate_results, write_results)

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = sorted((REPO / "reports").glob("*/results.json"))
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def _library_errors(doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def _minimal() -> dict:
    return {"schema": SCHEMA, "sbpet_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "command": ["sbpet", "run"],
            "config": {"pets": ["blur"], "seed": 0}, "dataset": {"fingerprint": "abc", "n_eval": 2},
            "plugins": [{"kind": "pet", "name": "blur", "version": "1", "options": {"sigma": 3.0}, "models": {}, "key": "k"}],
            "conditions": [{"pet": "blur", "attacker": "none", "status": "ok", "n_images": 2, "n_failed_images": 0,
                            "errors": [], "metrics": [{"metric": "auc", "value": 0.5, "evaluator": "hog-logreg",
                                                       "ci_low": None, "ci_high": None, "n": 2, "extra": {}}]}],
            "samples": [], "errors": [], "warnings": [], "cache": {"hits": 1, "misses": 0}}


def test_the_published_schema_file_is_generated_from_the_types():
    path = REPO / "docs" / "results.schema.json"
    assert path.read_text(encoding="utf-8") == schema_text(), \
        "docs/results.schema.json is out of date: python -m sbpet_bench.results > docs/results.schema.json"
    jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text(encoding="utf-8")))


def test_the_schema_follows_the_typeddicts():
    schema = json_schema()
    assert set(schema["properties"]) == set(get_type_hints(Results))
    assert set(schema["required"]) == set(Results.__required_keys__)
    for name, cls in (("Condition", Condition), ("MetricValue", MetricValue)):
        assert set(schema["$defs"][name]["properties"]) == set(get_type_hints(cls))
        assert set(schema["$defs"][name].get("required", [])) == set(cls.__required_keys__)
    assert schema["$defs"]["MetricValue"]["properties"]["value"]["anyOf"] == [
        {"type": "number"}, {"type": "null"}]  # NaN is written as null


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.parent.name)
def test_published_results_match_the_schema(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert _library_errors(doc) == [] and validate_results(doc) == []
    loaded = load_results(path.parent)  # a merged report on several data sets keeps its conditions per section
    assert loaded["conditions"] or all(part["conditions"] for part in loaded.get("datasets", [None]))


MUTATIONS = {
    "missing conditions": lambda d: d.pop("conditions"),
    "metric value a string": lambda d: d["conditions"][0]["metrics"][0].__setitem__("value", "0.5"),
    "metric without a name": lambda d: d["conditions"][0]["metrics"][0].pop("metric"),
    "n not an integer": lambda d: d["conditions"][0]["metrics"][0].__setitem__("n", 2.5),
    "boolean as a number": lambda d: d["conditions"][0]["metrics"][0].__setitem__("ci_low", True),
    "conditions an object": lambda d: d.__setitem__("conditions", {"blur/none": {}}),
    "schema tag wrong": lambda d: d.__setitem__("schema", "results/1"),
    "cache hits text": lambda d: d["cache"].__setitem__("hits", "1"),
    "dataset without fingerprint": lambda d: d["dataset"].pop("fingerprint"),
    "warnings not strings": lambda d: d.__setitem__("warnings", [{"w": 1}]),
    "an unknown extra section": lambda d: d.__setitem__("future_section", {"x": 1}),  # allowed: forward compatible
    "null git commit": lambda d: d.__setitem__("git_commit", None),  # allowed
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_built_in_checker_agrees_with_jsonschema(name):
    doc = _minimal()
    assert validate_results(doc) == [] and _library_errors(doc) == []
    MUTATIONS[name](doc)
    ours, theirs = validate_results(doc), _library_errors(doc)
    assert bool(ours) == bool(theirs), (ours, theirs)
    assert bool(ours) == (name not in ("an unknown extra section", "null git commit"))


def test_the_checker_names_the_field():
    doc = _minimal()
    doc["conditions"][0]["metrics"][0]["value"] = "high"
    assert validate_results(doc) == ["results.conditions[0].metrics[0].value: expected number or null, got str \"high\""]
    doc["conditions"][0]["metrics"][0]["value"] = math.nan  # strict JSON has no NaN (the library would take it)
    assert "not JSON" in validate_results(doc)[0]


def test_write_results_writes_strict_json_atomically(tmp_path):
    doc = _minimal()
    doc["conditions"][0]["metrics"][0].update(value=np.float32(0.25), ci_low=math.nan, ci_high=math.inf, n=np.int64(2),
                                              extra={"roc": np.array([0.0, 1.0]), "pair": (1, 2), "t": torch.tensor([0.5])})
    doc["timings"] = {"total": np.float64(1.5)}
    written = write_results(tmp_path, doc)  # a folder: <folder>/results.json
    text = (tmp_path / "results.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text and list(tmp_path.glob(".*.tmp")) == []
    metric = json.loads(text)["conditions"][0]["metrics"][0]
    assert metric["value"] == 0.25 and metric["ci_low"] is None and metric["ci_high"] is None and metric["n"] == 2
    assert metric["extra"] == {"roc": [0.0, 1.0], "pair": [1, 2], "t": [0.5]}
    assert load_results(tmp_path / "results.json") == written == json.loads(text)


def test_load_results_says_what_is_wrong_with_which_file(tmp_path):
    with pytest.raises(ResultsError, match=f"{tmp_path}: no results.json in this folder"):
        load_results(tmp_path)
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(ResultsError, match=f"{path}: not a results file: it is not valid JSON"):
        load_results(path)
    path.write_text(json.dumps([{"pet": "blur", "privacy_auc": 0.5}]))  # e.g. a leaderboard.json
    with pytest.raises(ResultsError, match=f"{path}: not an sbpet results file"):
        load_results(path)
    path.write_text(json.dumps({**_minimal(), "schema": "sbpet-results/2"}))
    with pytest.raises(ResultsError, match="written by a newer sbpet .*sbpet-results/2.*upgrade sbpet"):
        load_results(path)
    path.write_text(json.dumps(_minimal()).replace('"value": 0.5', '"value": NaN'))
    with pytest.raises(ResultsError, match="NaN is not JSON"):
        load_results(path)
    broken = _minimal()
    del broken["conditions"][0]["status"]
    path.write_text(json.dumps(broken))
    with pytest.raises(ResultsError, match=r"not a valid results file:\n  results.conditions\[0\]: required field 'status'"):
        load_results(path)
    assert load_results(path, validate=False)["conditions"][0]["pet"] == "blur"


# --------------------------------------------------------------------------- a fresh run


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    """A small run on synthetic images (identity PET, weight-free evaluators): what `sbpet run` writes today."""
    from PIL import Image

    from sbpet_bench.config import RunConfig
    from sbpet_bench.pipeline import run

    root = tmp_path_factory.mktemp("fresh")
    rng = np.random.default_rng(1)
    for gender, tint in (("male", (40, 0, 0)), ("female", (0, 0, 40))):
        (root / "data" / gender).mkdir(parents=True)
        for person in range(20):
            for shot in range(2):
                img = np.clip(rng.integers(60, 200, size=(32, 32, 3)) + np.array(tint), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / "data" / gender / f"{gender}{person:02d}_{shot}.png")
    cfg = RunConfig(data=str(root / "data"), out=str(root / "run"), cache_dir=str(root / "cache"), pets=["identity", "blur"],
                    attackers=[], per_class=10, train_per_class=6, pool_per_class=4, batch_size=6, bootstrap=10,
                    classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[], quiet=True,
                    informed_classifiers=["hog-logreg"], informed_per_class=6)  # a small informed tier: its sections too
    returned = run(cfg)
    return root / "run", returned


def test_a_fresh_run_matches_the_schema_and_declares_every_section(fresh_run):
    run_dir, returned = fresh_run
    doc = load_results(run_dir)  # validates
    assert _library_errors(doc) == [] and doc == returned
    declared = get_type_hints(Results)
    assert set(doc) <= set(declared), f"undeclared results sections: {set(doc) - set(declared)} (add them to Results)"
    metrics = [m for c in doc["conditions"] for m in c["metrics"]]
    assert metrics and {k for m in metrics for k in m} <= set(get_type_hints(MetricValue))
    assert {k for c in doc["conditions"] for k in c} <= set(get_type_hints(Condition))


def test_the_schema_rejects_a_damaged_fresh_run(fresh_run):
    doc = copy.deepcopy(load_results(fresh_run[0]))
    doc["conditions"][0]["metrics"][0]["value"] = [1]
    assert validate_results(doc) and _library_errors(doc)
