"""The alignment stage (sbpet_bench.align), the dlib aligner (plugins/sbpet_align) and the stand-in generator."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sbpet_bench.align import AlignStageError, align_records
from sbpet_bench.api import FEMALE, MALE, Aligner, AlignResult, FaceRecord, PluginError
from sbpet_bench.cache import Cache
from sbpet_bench.images import load_image
from sbpet_bench.modelstore import default_home
from sbpet_bench.plugins import load_registry
from sbpet_bench.standin import StandinError, make_standin
from sbpet_bench.testing import make_context

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


def _predictor_path() -> Path | None:
    """The 68-point model from the model store, else from the face_recognition_models wheel."""
    stored = default_home() / PREDICTOR_FILE
    if stored.exists():
        return stored
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
        if path.exists():
            return path
    return None


@pytest.fixture(scope="module")
def aligner(tmp_path_factory):
    path = _predictor_path()
    if path is None:
        pytest.skip("the dlib shape predictor is not available (sbpet models fetch dlib-shape-predictor-68)")
    entry = load_registry().get("aligner", "dlib")
    context = make_context(tmp_path_factory.mktemp("align"), model_path=lambda name: str(path))
    return entry.create({}, context)


def _lfw3d_faces(lfw3d: Path, n: int) -> list[tuple[str, int, np.ndarray]]:
    """The first ``n`` male and ``n`` female LFW3D names (sorted) with their images."""
    out = []
    for fname, gender in (("male_names.txt", MALE), ("female_names.txt", FEMALE)):
        for name in sorted((lfw3d / fname).read_text().split())[:n]:
            out.append((name, gender, load_image(lfw3d / "images" / name.rsplit("_", 1)[0] / name)))
    return out


def _rotate_padded(image: np.ndarray, degrees: float, pad: int = 40) -> np.ndarray:
    import cv2

    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    h, w = padded.shape[:2]
    rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(padded, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _canonical_roll() -> float:
    from sbpet_align.transform import TIGHT_ANCHORS

    (x0, y0), (x1, y1) = TIGHT_ANCHORS[0], TIGHT_ANCHORS[1]
    return float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))


# --------------------------------------------------------------------------- the dlib aligner


def test_registry_has_the_dlib_aligner_and_its_model():
    registry = load_registry()
    assert "dlib" in registry.names("aligner")
    assert issubclass(registry.get("aligner", "dlib").cls, Aligner)
    assert "dlib-shape-predictor-68" in registry.assets
    assert registry.get("aligner", "dlib").cls.models == ("dlib-shape-predictor-68",)


def test_rotated_faces_come_back_upright(aligner, lfw3d):
    from sbpet_align.landmarks import roll_degrees

    faces = _lfw3d_faces(lfw3d, 2)
    for k, (name, _, image) in enumerate(faces):
        angle = 25.0 if k % 2 == 0 else -28.0
        tilted = _rotate_padded(image, angle)
        before = aligner.finder.find(tilted)
        assert not isinstance(before, str), name
        assert abs(roll_degrees(before.points)) > 20, f"{name}: the test input should be strongly rolled"
        result = aligner.align([tilted], 90, "tight")
        assert result.found == [True] and result.reasons == [""]
        assert result.images.shape == (1, 90, 90, 3) and result.images.dtype == np.uint8
        after = aligner.finder.find(result.images[0])
        assert not isinstance(after, str), f"{name}: no face on the aligned crop"
        residual = roll_degrees(after.points) - _canonical_roll()
        assert abs(residual) < 4.0, f"{name}: eye line still {residual:.1f} degrees off after aligning a {angle} degree roll"
        # the reported rotation undoes the roll applied (cv2 angles: counter-clockwise positive)
        assert abs(result.diagnostics[0]["rotation_deg"] + angle) < 5.0


def test_aligned_crop_puts_the_eyes_on_the_anchors_for_both_crops(aligner, lfw3d):
    from sbpet_align.transform import anchor_points, anchors

    _, _, image = _lfw3d_faces(lfw3d, 1)[0]
    big = np.asarray(Image.fromarray(image).resize((170, 170), Image.BILINEAR))
    eye_gap = {}
    for crop in ("tight", "context"):
        result = aligner.align([big], 112, crop)
        assert result.found == [True]
        diag = result.diagnostics[0]
        matrix = np.array(diag["transform"])
        points = anchor_points(np.array(diag["landmarks"])[None])[0]
        mapped = points @ matrix[:, :2].T + matrix[:, 2]
        target = anchors(crop, 112)
        assert np.abs(mapped[:2] - target[:2]).max() < 4.0, (crop, mapped, target)  # eyes within 4 px of 112
        eye_gap[crop] = float(np.linalg.norm(mapped[1] - mapped[0]))
    assert eye_gap["context"] / eye_gap["tight"] == pytest.approx(0.6, abs=0.03)


def test_image_without_a_face_is_reported_not_dropped(aligner, lfw3d):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (130, 150, 3), dtype=np.uint8)
    flat = np.full((100, 100, 3), 128, np.uint8)
    _, _, face = _lfw3d_faces(lfw3d, 1)[0]
    result = aligner.align([noise, face, flat], 64, "tight")
    assert result.found == [False, True, False]
    assert result.reasons[0] == "no face detected" and result.reasons[2] == "no face detected"
    assert result.reasons[1] == ""
    assert result.images.shape == (3, 64, 64, 3)
    assert len(result.diagnostics) == 3 and "landmarks" in result.diagnostics[1]
    json.dumps(result.diagnostics)  # JSON-able


def test_bad_options_and_inputs_are_clear_errors(aligner, tmp_path):
    entry = load_registry().get("aligner", "dlib")
    context = make_context(tmp_path, model_path=lambda name: str(_predictor_path()))
    with pytest.raises(PluginError, match="roll_retries"):
        entry.create({"roll_retries": "15,up"}, context)
    with pytest.raises(PluginError, match="min_side"):
        entry.create({"min_side": 50}, context)
    with pytest.raises(PluginError, match="unknown crop 'loose'"):
        aligner.align([np.zeros((90, 90, 3), np.uint8)], 90, "loose")
    with pytest.raises(PluginError, match="uint8"):
        aligner.align([np.zeros((90, 90, 3), np.float32)], 90, "tight")


# --------------------------------------------------------------------------- the harness stage


class CountingAligner(Aligner):
    """Finds a 'face' in every image whose top-left pixel is not pure black; counts what it is given."""

    name = "counting"
    version = "1"

    def __init__(self, options, context):
        super().__init__(options, context)
        self.seen = 0
        self.calls = 0

    def align(self, images, size, crop="tight"):
        self.calls += 1
        self.seen += len(images)
        found = [bool(im[0, 0].any()) for im in images]
        out = np.stack([np.asarray(Image.fromarray(im).resize((size, size))) for im in images])
        return AlignResult(out, found, ["" if f else "no face detected" for f in found], [{"h": im.shape[0]} for im in images])


def _records(folder: Path, n: int) -> list[FaceRecord]:
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        image = rng.integers(1, 256, (60 + i, 50 + 2 * i, 3), dtype=np.uint8)
        if i == 2:
            image[0, 0] = 0  # the stub finds no face here
        path = folder / f"p{i}.png"
        Image.fromarray(image).save(path)
        records.append(FaceRecord(str(path), MALE if i % 2 else FEMALE, f"person{i // 2}", f"p{i}.png"))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    records.append(FaceRecord(str(folder / "broken.jpg"), MALE, "person9", "broken.jpg"))
    return records


def test_align_records_writes_crops_lists_misses_and_caches(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    records = _records(data, 5)
    cache = Cache(tmp_path / "cache")
    stub = CountingAligner({}, make_context())
    aligned, skipped = align_records(records, stub, cache, 32, "tight", batch_size=2, aligner_key="k1")
    assert stub.seen == 5 and stub.calls == 3  # the undecodable file never reaches the aligner
    assert [r.id for r in aligned] == ["p0.png", "p1.png", "p3.png", "p4.png"]
    for rec, original in zip(aligned, [records[i] for i in (0, 1, 3, 4)]):
        assert (rec.gender, rec.identity) == (original.gender, original.identity)
        assert Path(rec.path).is_relative_to(cache.root / "aligned")
        assert load_image(rec.path).shape == (32, 32, 3)
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert reasons["p2.png"] == "alignment (counting): no face detected"
    assert "not an image" in reasons["broken.jpg"] or "unreadable" in reasons["broken.jpg"]

    again = CountingAligner({}, make_context())
    aligned2, skipped2 = align_records(records, again, cache, 32, "tight", batch_size=2, aligner_key="k1")
    assert again.seen == 0  # everything, misses included, came from the cache
    assert aligned2 == aligned and skipped2 == skipped

    # another size, crop or aligner key is another entry; an edited image is aligned again, alone
    other = CountingAligner({}, make_context())
    align_records(records, other, cache, 32, "context", aligner_key="k1")
    assert other.seen == 5
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(records[0].path)
    edited = CountingAligner({}, make_context())
    aligned3, _ = align_records(records, edited, cache, 32, "tight", aligner_key="k1")
    assert edited.seen == 1
    assert aligned3[0].path != aligned[0].path and load_image(aligned3[0].path)[0, 0].tolist() == [200, 200, 200]

    refreshed = CountingAligner({}, make_context())
    align_records(records, refreshed, Cache(tmp_path / "cache", refresh=True), 32, "tight", aligner_key="k1")
    assert refreshed.seen == 5


def test_align_records_with_dlib_runs_detection_once(aligner, lfw3d, tmp_path):
    faces = _lfw3d_faces(lfw3d, 2)
    records = []
    for name, gender, image in faces:
        path = tmp_path / name
        Image.fromarray(_rotate_padded(image, 20.0)).save(path)
        records.append(FaceRecord(str(path), gender, name.rsplit("_", 1)[0], name))
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(noise)
    records.append(FaceRecord(str(noise), MALE, "nobody", "noise.png"))
    cache = Cache(tmp_path / "cache")
    before = aligner.finder.calls
    aligned, skipped = align_records(records, aligner, cache, 90, "tight", batch_size=3)
    assert aligner.finder.calls > before
    assert [r.id for r in aligned] == [r.id for r in records[:4]]
    assert skipped == [{"path": str(noise), "reason": "alignment (dlib): no face detected"}]
    calls = aligner.finder.calls
    assert align_records(records, aligner, cache, 90, "tight", batch_size=3) == (aligned, skipped)
    assert aligner.finder.calls == calls  # no detection on the second call


def test_align_records_rejects_an_aligner_that_breaks_the_contract(tmp_path):
    class Wrong(CountingAligner):
        name = "wrong"

        def align(self, images, size, crop="tight"):
            result = super().align(images, size, crop)
            return AlignResult(result.images[:, :, :-1], result.found, result.reasons)

    data = tmp_path / "d"
    data.mkdir()
    with pytest.raises(AlignStageError, match="aligner 'wrong' returned images"):
        align_records(_records(data, 2), Wrong({}, make_context()), Cache(tmp_path / "c"), 16, "tight")
    with pytest.raises(ValueError, match="unknown crop"):
        align_records([], Wrong({}, make_context()), Cache(tmp_path / "c"), 16, "wide")


# --------------------------------------------------------------------------- the stand-in


def test_standin_is_seeded_keeps_labels_and_reads_as_lfw(lfw3d, tmp_path):
    a = make_standin(lfw3d, tmp_path / "a", seed=0, per_class=5)
    make_standin(lfw3d, tmp_path / "b", seed=0, per_class=5)
    make_standin(lfw3d, tmp_path / "c", seed=1, per_class=5)
    assert (a["males"], a["females"]) == (5, 5)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files_a) == 10
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a" / "standin.json").read_text() == (tmp_path / "b" / "standin.json").read_text()
    assert sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*.jpg")) != files_a

    source_males = set((lfw3d / "male_names.txt").read_text().split())
    source_females = set((lfw3d / "female_names.txt").read_text().split())
    males = (tmp_path / "a" / "male_names.txt").read_text().split()
    females = (tmp_path / "a" / "female_names.txt").read_text().split()
    assert len(males) == 5 and set(males) <= source_males - source_females
    assert len(females) == 5 and set(females) <= source_females - source_males

    entry = load_registry().get("dataset", "lfw")
    source = entry.create({}, make_context())
    assert source.detect(str(tmp_path / "a"))
    records, _ = source.read(str(tmp_path / "a"))
    assert {r.id.split("/")[1]: r.gender for r in records} == {**{m: MALE for m in males}, **{f: FEMALE for f in females}}
    for rec in records:
        assert rec.identity == rec.id.split("/")[1].rsplit("_", 1)[0]
        image = load_image(rec.path)
        assert 100 <= image.shape[1] <= 180 and image.shape[0] >= 90  # detector-crop sizes, not LFW3D's 90 px

    with pytest.raises(StandinError, match="not empty"):
        make_standin(lfw3d, tmp_path / "a", seed=0, per_class=5)
    with pytest.raises(StandinError, match="male_names.txt"):
        make_standin(tmp_path / "c" / "images", tmp_path / "d", seed=0, per_class=5)


def test_aligner_undoes_the_standin_transform(aligner, lfw3d, tmp_path):
    make_standin(lfw3d, tmp_path / "wild", seed=0, per_class=6)
    truth = json.loads((tmp_path / "wild" / "standin.json").read_text())["images"]
    names = sorted(truth)
    images = [load_image(tmp_path / "wild" / "images" / n.rsplit("_", 1)[0] / n) for n in names]
    result = aligner.align(images, 90, "tight")
    assert sum(result.found) >= 10  # of 12
    errors = []
    for name, ok, diag in zip(names, result.found, result.diagnostics):
        if ok:
            total = np.array(diag["transform"]) @ np.vstack([np.array(truth[name]["matrix"]), [0, 0, 1]])
            errors.append(np.degrees(np.arctan2(total[1, 0], total[0, 0])))
    rolls = np.abs([truth[n]["roll_deg"] for n in names])
    assert rolls.max() > 10  # the stand-in does roll its faces
    assert np.median(np.abs(errors)) < 3.0
