"""Data sources, robust decoding and identity-disjoint splits."""

import numpy as np
import pytest
from PIL import Image

from sbpet_bench.api import FEMALE, MALE, FaceRecord
from sbpet_bench.data import SplitSpec, dataset_fingerprint, split
from sbpet_bench.images import ImageDecodeError, load_image
from sbpet_bench.plugins import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _face(seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_decoding_handles_modes_and_exif(tmp_path):
    rgb = _face(0)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
    # EXIF orientation 6 = rotate 90 degrees clockwise when displayed
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:5] = 255  # bright top rows
    im = Image.fromarray(tall)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.jpg", exif=exif)
    for name in ("gray.png", "rgba.png", "palette.png", "gray16.png"):
        out = load_image(tmp_path / name)
        assert out.shape == (40, 40, 3) and out.dtype == np.uint8, name
    g16 = load_image(tmp_path / "gray16.png")
    assert abs(int(g16[..., 0].astype(int).max()) - int(rgb[..., 0].max())) <= 1  # scaled, not clipped
    rotated = load_image(tmp_path / "rotated.jpg")
    assert rotated.shape[:2] == (20, 40)  # width and height swapped by the EXIF rotation
    assert rotated[:, -5:].mean() > 200  # the bright top rows are now on the right


def test_bad_files_raise_with_reason(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    Image.fromarray(_face(1, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    for name, reason in (("text.jpg", "not an image"), ("truncated.jpg", "truncated"), ("empty.png", "not an image"),
                         ("missing.png", "not found")):
        with pytest.raises(ImageDecodeError, match=reason):
            load_image(tmp_path / name)


def test_lfw3d_reads_labels_and_identities(registry, lfw3d):
    source = registry.get("dataset", "lfw").create({}, None)
    assert source.detect(str(lfw3d))
    records, skipped = source.read(str(lfw3d))
    assert len(records) == 13233 and skipped == []
    labelled = [r for r in records if r.gender is not None]
    assert len(labelled) == 13233 - 8  # 5 in both lists and 3 in neither are unlabelled
    assert sum(r.gender == MALE for r in records) == 10263
    assert len({r.identity for r in records}) == 5749


def test_official_lfw_layout_is_read(registry, tmp_path):
    root = tmp_path / "lfw_official"
    for ident, n in (("Jane_Doe", 2), ("John_Roe", 1)):
        (root / "lfw" / ident).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(_face(i)).save(root / "lfw" / ident / f"{ident}_{i:04d}.jpg")
    (root / "male_names.txt").write_text("John_Roe_0001.jpg\n")
    (root / "female_names.txt").write_text("Jane_Doe_0001.jpg\nJane_Doe_0002.jpg\n")
    records, _ = registry.get("dataset", "lfw").create({}, None).read(str(root))
    assert {(r.identity, r.gender) for r in records} == {("Jane_Doe", FEMALE), ("John_Roe", MALE)}


def test_csv_and_folder_sources(registry, tmp_path):
    for sub in ("male", "female"):
        (tmp_path / "f" / sub).mkdir(parents=True)
        Image.fromarray(_face(3)).save(tmp_path / "f" / sub / f"Some_One_{sub}_0001.png")
    (tmp_path / "f" / "male" / "notes.txt").write_text("x")
    records, skipped = registry.get("dataset", "folders").create({}, None).read(str(tmp_path / "f"))
    assert sorted(r.gender for r in records) == [FEMALE, MALE]
    assert skipped and skipped[0]["path"].endswith("notes.txt")
    (tmp_path / "m.csv").write_text("path,gender,identity\nf/male/Some_One_male_0001.png,male,A\nf/female/Some_One_female_0001.png,F,B\n,male,C\n")
    records, skipped = registry.get("dataset", "csv").create({}, None).read(str(tmp_path / "m.csv"))
    assert [(r.identity, r.gender) for r in records] == [("A", MALE), ("B", FEMALE)]
    assert len(skipped) == 1


def _records(n_ids=60, per_id=3):
    return [FaceRecord(f"/nonexistent/{i}_{k}", MALE if i % 2 else FEMALE, f"id{i}", f"id{i}/{k}")
            for i in range(n_ids) for k in range(per_id)]


def test_split_is_balanced_seeded_and_identity_disjoint(monkeypatch):
    monkeypatch.setattr("sbpet_bench.data.load_image", lambda path, size=None: None)
    records = _records()
    spec = SplitSpec(per_class=10, seed=3, max_per_identity=2, train_per_class=20, pool_per_class=10)
    a, b = split(records, spec), split(records, spec)
    assert [r.id for r in a.eval] == [r.id for r in b.eval]
    assert sum(r.gender == MALE for r in a.eval) == 10 and sum(r.gender == FEMALE for r in a.eval) == 10
    ids = [{r.identity for r in part} for part in (a.eval, a.train, a.pool)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert all(len([r for r in a.eval if r.identity == i]) <= 2 for i in ids[0])
    other = split(records, SplitSpec(per_class=10, seed=4, max_per_identity=2, train_per_class=20, pool_per_class=10))
    assert [r.id for r in other.eval] != [r.id for r in a.eval]


def test_split_skips_unusable_images_and_lists_them(tmp_path):
    records = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        if i == 0:
            path.write_text("broken")
        else:
            Image.fromarray(_face(i)).save(path)
        records.append(FaceRecord(str(path), MALE if i % 2 == 0 else FEMALE, f"id{i}", f"{i}.png"))
    s = split(records, SplitSpec(per_class=2, seed=0, train_per_class=1, pool_per_class=1))
    assert [x["path"] for x in s.skipped] == [str(tmp_path / "0.png")]
    assert all(r.id != "0.png" for r in s.eval + s.train + s.pool)


def test_fingerprint_changes_with_labels():
    records = _records(4, 1)
    flipped = [FaceRecord(r.path, 1 - r.gender, r.identity, r.id) for r in records]
    assert dataset_fingerprint(records) != dataset_fingerprint(flipped)
