"""Data sources, robust decoding, content fingerprints and identity-disjoint splits."""

import hashlib
import json
import os
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sbpet_bench.api import FEMALE, MALE, FaceRecord, PluginError
from sbpet_bench.config import ConfigError
from sbpet_bench.data import (SplitSpec, Splits, check_evaluation_size, check_training_split, dataset_fingerprint, split,
                              working_size)
from sbpet_bench.images import ImageDecodeError, load_image
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import make_context


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
    for name, reason in (("text.jpg", "not an image"), ("truncated.jpg", "truncated"), ("empty.png", "empty file"),
                         ("missing.png", "not found")):
        with pytest.raises(ImageDecodeError, match=reason):
            load_image(tmp_path / name)


def test_lfw3d_reads_labels_and_identities(registry, lfw3d):
    source = registry.get("dataset", "lfw").create({}, make_context())
    assert source.detect(str(lfw3d))
    records, skipped = source.read(str(lfw3d))
    # 5 files named in both lists and 3 in neither are listed with that reason instead of vanishing
    reasons = sorted(s["reason"] for s in skipped)
    assert reasons == ["named in both male_names.txt and female_names.txt"] * 5 + ["named in neither male_names.txt nor female_names.txt"] * 3
    assert len(records) == 13233 - 8 and all(r.gender in (MALE, FEMALE) for r in records)
    assert sum(r.gender == MALE for r in records) == 10263
    assert len({r.identity for r in records}) == 5749 - 5  # five people have only a doubly listed image


def test_official_lfw_layout_is_read(registry, tmp_path):
    root = tmp_path / "lfw_official"
    for ident, n in (("Jane_Doe", 2), ("John_Roe", 1)):
        (root / "lfw" / ident).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(_face(i)).save(root / "lfw" / ident / f"{ident}_{i:04d}.jpg")
    (root / "male_names.txt").write_text("John_Roe_0001.jpg\n")
    (root / "female_names.txt").write_text("Jane_Doe_0001.jpg\nJane_Doe_0002.jpg\n")
    records, _ = registry.get("dataset", "lfw").create({}, make_context()).read(str(root))
    assert {(r.identity, r.gender) for r in records} == {("Jane_Doe", FEMALE), ("John_Roe", MALE)}


def test_csv_and_folder_sources(registry, tmp_path):
    for sub in ("male", "female"):
        (tmp_path / "f" / sub).mkdir(parents=True)
        Image.fromarray(_face(3)).save(tmp_path / "f" / sub / f"Some_One_{sub}_0001.png")
    (tmp_path / "f" / "male" / "notes.txt").write_text("x")
    records, skipped = registry.get("dataset", "folders").create({}, make_context()).read(str(tmp_path / "f"))
    assert sorted(r.gender for r in records) == [FEMALE, MALE]
    assert skipped and skipped[0]["path"].endswith("notes.txt")
    (tmp_path / "m.csv").write_text("path,gender,identity\nf/male/Some_One_male_0001.png,male,A\nf/female/Some_One_female_0001.png,F,B\n,male,C\n")
    records, skipped = registry.get("dataset", "csv").create({}, make_context()).read(str(tmp_path / "m.csv"))
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


# --------------------------------------------------------------------------- decoding limits


def test_dark_16_bit_stays_dark_and_bombs_are_refused(tmp_path):
    dark = (np.arange(40 * 40).reshape(40, 40) % 1000).astype(np.uint16)  # at most 1000 of 65535
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    out = load_image(tmp_path / "dark16.png")
    assert 0 < int(out.max()) <= 4  # scaled by the 16-bit range, not read as 8-bit levels up to 255
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # a valid PNG header claiming 50000 x 50000 RGB pixels, with almost no data
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_reduced_while_decoding(tmp_path, fmt):
    Image.fromarray(_face(5, 64)).save(tmp_path / f"big.{fmt.lower()}", format=fmt)
    reduced = load_image(tmp_path / f"big.{fmt.lower()}", max_side=16)
    assert reduced.shape == (16, 16, 3)  # JPEG: decoded at 1/4 scale; PNG: reduced by 4 after decoding
    assert load_image(tmp_path / f"big.{fmt.lower()}", max_side=40).shape == (64, 64, 3)  # under 2x the limit: as is
    assert load_image(tmp_path / f"big.{fmt.lower()}", size=20, max_side=16).shape == (20, 20, 3)


# --------------------------------------------------------------------------- sources: class folders, identities, labels


@pytest.mark.parametrize("male, female", [("male", "female"), ("Men", "Women"), ("M", "F"), ("man", "WOMAN"), ("males", "females")])
def test_folders_accepts_the_usual_class_names_and_says_which(registry, tmp_path, male, female):
    for sub in (male, female):
        (tmp_path / sub).mkdir()
        Image.fromarray(_face(3)).save(tmp_path / sub / "a.png")
    source = registry.get("dataset", "folders").create({}, make_context())
    assert source.detect(str(tmp_path))
    records, skipped = source.read(str(tmp_path))
    assert skipped == [] and sorted((r.id, r.gender) for r in records) == sorted([(f"{male}/a.png", MALE), (f"{female}/a.png", FEMALE)])
    assert f"male images from {male}/, female images from {female}/" in source.notices[0]


def test_folders_refuses_two_folders_for_one_class(registry, tmp_path):
    for sub in ("male", "men", "female"):
        (tmp_path / sub).mkdir()
    with pytest.raises(PluginError, match=r"exactly one male folder .*found male/, men/"):
        registry.get("dataset", "folders").create({}, make_context()).read(str(tmp_path))


def test_images_without_identity_labels_are_their_own_identities(registry, tmp_path):
    for sub in ("male", "female"):
        (tmp_path / sub).mkdir()
        for k in range(3):
            Image.fromarray(_face(k)).save(tmp_path / sub / f"face_{k}.jpg")
    (tmp_path / "male" / "Jane_Doe").mkdir()
    Image.fromarray(_face(9)).save(tmp_path / "male" / "Jane_Doe" / "x.jpg")
    source = registry.get("dataset", "folders").create({}, make_context())
    records, _ = source.read(str(tmp_path))
    by_id = {r.id: r.identity for r in records}
    assert by_id["male/Jane_Doe/x.jpg"] == "Jane_Doe"  # a sub-folder is an identity label
    flat = [i for k, i in by_id.items() if "Jane_Doe" not in k]
    assert len(set(flat)) == 6 and "face" not in flat  # not one person "face" across both genders
    assert any("each is its own identity" in n for n in source.notices)
    patterned = registry.get("dataset", "folders").create({"identity_pattern": r"^(face)_\d$"}, make_context())
    records, skipped = patterned.read(str(tmp_path))
    assert {r.identity for r in records} == {"face"} and [s["path"] for s in skipped] == [str(tmp_path / "male/Jane_Doe/x.jpg")]
    assert any("identities have images in both class folders" in n for n in patterned.notices)
    for bad, why in (("(", "not a valid regular expression"), (r"face_\d", "exactly one")):
        with pytest.raises(PluginError, match=why):
            registry.get("dataset", "folders").create({"identity_pattern": bad}, make_context()).read(str(tmp_path))


def test_csv_identity_is_optional_and_extra_columns_are_labels(registry, tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(_face(1)).save(tmp_path / name)
    (tmp_path / "m.csv").write_text(" Path ; GENDER ; Age ; Glasses\na.png;male;31;yes\nb.png;woman;;no\n")  # European Excel: ';'
    source = registry.get("dataset", "csv").create({}, make_context())
    records, skipped = source.read(str(tmp_path / "m.csv"))
    assert skipped == []
    assert [(r.identity, r.gender, dict(r.labels)) for r in records] == [
        ("a.png", MALE, {"age": "31", "glasses": "yes"}), ("b.png", FEMALE, {"glasses": "no"})]
    assert any("no identity column" in n for n in source.notices)
    (tmp_path / "m.csv").write_text("path,identity\na.png,x\n")
    with pytest.raises(PluginError, match="missing column.*gender"):
        source.read(str(tmp_path / "m.csv"))


# --------------------------------------------------------------------------- fingerprints from contents


def _small_corpus(root, n=6):
    records = []
    for i in range(n):
        path = root / f"id{i}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_face(i)).save(path)
        os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
        records.append(FaceRecord(str(path), MALE if i % 2 else FEMALE, f"id{i}", f"id{i}/{i}.png"))
    return records


def _moved(records, src, dst):
    return [FaceRecord(r.path.replace(str(src), str(dst)), r.gender, r.identity, r.id) for r in records]


def test_fingerprint_follows_contents_not_times_or_places(tmp_path, monkeypatch):
    memo = tmp_path / "memo"
    records = _small_corpus(tmp_path / "a")
    first = dataset_fingerprint(records, memo)
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)  # another folder, new times
    copy = _moved(records, tmp_path / "a", tmp_path / "b")
    for k, rec in enumerate(copy):
        os.utime(rec.path, ns=(1_700_000_000_000_000_000 - k, 1_700_000_000_000_000_000 - k))
    assert os.stat(copy[0].path).st_mtime_ns != os.stat(records[0].path).st_mtime_ns
    assert dataset_fingerprint(copy, memo) == first
    os.utime(records[0].path)  # touched, bytes unchanged
    assert dataset_fingerprint(records, memo) == first
    data = bytearray(Path(copy[1].path).read_bytes())
    data[-20] ^= 1  # one bit of one file
    Path(copy[1].path).write_bytes(bytes(data))
    assert dataset_fingerprint(copy, memo) != first


def test_fingerprint_digests_are_remembered_on_disk(tmp_path, monkeypatch):
    memo = tmp_path / "memo"
    records = _small_corpus(tmp_path / "a")
    first = dataset_fingerprint(records, memo)
    assert len(list(memo.glob("*.json"))) == 1
    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, algo: reads.append(fh.name) or real(fh, algo))
    assert dataset_fingerprint(records, memo) == first and reads == []  # served from the memo
    os.utime(records[2].path, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))  # changed stamp: read again
    assert dataset_fingerprint(records, memo) == first and reads == [records[2].path]
    monkeypatch.setenv("SBPET_HOME", str(tmp_path / "home"))
    dataset_fingerprint(records)  # default memo folder: $SBPET_HOME/hashes
    assert list((tmp_path / "home" / "hashes").glob("*.json"))


def test_fingerprint_memo_is_safe_under_concurrent_runs(tmp_path):
    memo = tmp_path / "memo"
    parts = [_small_corpus(tmp_path / "d" / f"p{k}", 3) for k in range(6)]  # one data folder, six subsets
    with ThreadPoolExecutor(6) as pool:
        fingerprints = list(pool.map(lambda recs: dataset_fingerprint(recs, memo), parts * 3))
    assert fingerprints[:6] == fingerprints[6:12] == fingerprints[12:]
    for memo_file in memo.glob("*.json"):
        json.loads(memo_file.read_text())  # never a torn file
    assert not list(memo.glob("*.tmp"))


def test_fingerprint_handles_non_utf8_names(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9.png")
    Image.fromarray(_face(0)).save(path)
    rec = FaceRecord(str(path), MALE, "caf\\xe9", "caf\\xe9.png")
    assert len(dataset_fingerprint([rec], tmp_path / "memo")) == 16


# --------------------------------------------------------------------------- working size, evaluation size, splits


def test_working_size_is_a_property_of_the_data_set(tmp_path):
    records = []
    for i, (w, h) in enumerate([(60, 40)] + [(40, 40)] * 5 + [(90, 90)] * 2):
        path = tmp_path / f"{i}.png"
        Image.fromarray(_face(i, 1)[:1, :1].repeat(h, 0).repeat(w, 1)).save(path)
        records.append(FaceRecord(str(path), MALE, f"id{i}", f"{i:02d}.png"))
    size, notice = working_size(records)
    assert size == 40 and "5 of 8 sampled" in notice  # not the 60x40 image that sorts first
    assert working_size(records, declared=112) == (112, None)
    assert working_size(records[1:6]) == (40, None)  # all alike: nothing to say
    assert working_size(records[:1])[0] == 40  # no square image: the shorter side
    assert working_size(records[6:], max_size=64)[0] == 64


def test_evaluation_set_too_small_is_a_clear_error():
    recs = _records(30, 1)
    check_evaluation_size(Splits(recs[:20], [], []), min_per_class=10)
    with pytest.raises(ConfigError, match=r"only 4 male and 4 female usable image.*at least 10 per gender"):
        check_evaluation_size(Splits(recs[:8], [], []), min_per_class=10)


def test_training_split_without_a_gender_is_a_clear_error():
    recs = _records(40, 1)
    men = [r for r in recs if r.gender == MALE]
    women = [r for r in recs if r.gender == FEMALE]
    spec = SplitSpec(per_class=10, train_per_class=30, pool_per_class=5)
    check_training_split(Splits(recs[:20], men[:5] + women[:5], men[5:7] + women[5:7]), spec)  # both genders: fine
    with pytest.raises(ConfigError) as err:
        check_training_split(Splits(men[:10] + women[:10], men[10:], women[10:12]), spec)
    message = str(err.value)
    for fragment in (f"the training split has {len(men) - 10} male and 0 female images (--train-per-class 30 asked for)",
                     "--per-class 10", "evaluates 10 male and 10 female", "Lower --per-class, --train-per-class or --pool-per-class"):
        assert fragment in message, message
    with pytest.raises(ConfigError, match=r"the candidate pool has 0 male and 2 female images \(--pool-per-class 5"):
        check_training_split(Splits(recs[:20], men[:5] + women[:5], women[5:7]), spec)
    with pytest.raises(ConfigError, match=r"--train-data has no \(unused\) identities of that gender"):
        check_training_split(Splits(recs[:20], men[:5], men[5:7] + women[5:7]), spec, "--train-data")
    # nothing asked for: nothing to check (a run that fits nothing may leave both splits empty)
    check_training_split(Splits(recs[:20], [], []), SplitSpec(per_class=10, train_per_class=0, pool_per_class=0))


def test_split_works_when_every_image_is_its_own_identity(monkeypatch):
    monkeypatch.setattr("sbpet_bench.data.load_image", lambda path, size=None: None)
    records = _records(3000, 1)
    s = split(records, SplitSpec(per_class=200, seed=1, train_per_class=300, pool_per_class=100))
    assert sum(r.gender == MALE for r in s.eval) == 200 and sum(r.gender == FEMALE for r in s.eval) == 200
    assert len(s.train) == 600 and len(s.pool) == 200
    parts = [{r.identity for r in p} for p in (s.eval, s.train, s.pool)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_dev_and_test_samples_are_identity_disjoint_and_share_the_training_split(registry, lfw3d):
    records, _ = registry.get("dataset", "lfw").create({}, make_context()).read(str(lfw3d))
    spec = dict(per_class=60, seed=3, train_per_class=80, pool_per_class=20)
    test, dev = split(records, SplitSpec(**spec)), split(records, SplitSpec(**spec, split="dev"))
    ids = lambda recs: {r.identity for r in recs}  # noqa: E731
    assert ids(test.eval).isdisjoint(ids(dev.eval))
    assert [r.id for r in test.train] == [r.id for r in dev.train] and [r.id for r in test.pool] == [r.id for r in dev.pool]
    for s in (test, dev):
        assert ids(s.eval).isdisjoint(ids(s.train) | ids(s.pool))
    assert ids(dev.eval).isdisjoint(ids(test.train) | ids(test.pool))
    assert sum(r.gender == MALE for r in test.eval) == 60 == sum(r.gender == FEMALE for r in dev.eval)
    with pytest.raises(ConfigError, match="--split dev needs"):
        split(records, SplitSpec(per_class=None, split="dev"))


def test_default_sizes_leave_both_genders_in_training_and_pool(registry, lfw3d, monkeypatch):
    """The main job's sizes on LFW3D (--per-class 500): the evaluation draws use up the women at the front
    of the shuffled identity order, so a pool cut from the front of what is left had no woman at all."""
    monkeypatch.setattr("sbpet_bench.data.load_image", lambda path, size=None: None)  # decoding is not the point
    records, _ = registry.get("dataset", "lfw").create({}, make_context()).read(str(lfw3d))
    s = split(records, SplitSpec(per_class=500, seed=0, train_per_class=1000, pool_per_class=500))
    for part in (s.train, s.pool):
        counts = {g: sum(r.gender == g for r in part) for g in (MALE, FEMALE)}
        assert min(counts.values()) >= 0.4 * max(counts.values()), counts
    ids = lambda recs: {r.identity for r in recs}  # noqa: E731
    assert ids(s.eval).isdisjoint(ids(s.train) | ids(s.pool)) and ids(s.train).isdisjoint(ids(s.pool))
