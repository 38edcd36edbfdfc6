"""A hostile corpus in all three layouts: every entry is a record or listed with a specific reason.

The corpus holds ordinary faces plus files that crashed, hung or were silently mis-handled before:
decompression-bomb headers, a 12000x12000 photo, dark 16-bit PNGs, non-UTF-8 file names, FIFOs,
symlink loops and links out of the data folder, directories named like images, byte-order marks,
unknown genders and repeated manifest rows. Whole-file cases (a Latin-1 or UTF-16 names list or
manifest, conflicting manifest rows) get their own tests below.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from sbpet_bench.api import FEMALE, MALE, PluginError
from sbpet_bench.data import DiskFaceSet, SplitSpec, dataset_fingerprint, split, working_size
from sbpet_bench.images import ImageDecodeError, display_path, load_image
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import make_context

SIZE = 40  # the corpus's ordinary faces are SIZE x SIZE
OK = "ok"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


# --------------------------------------------------------------------------- file makers


def _face(seed: int, w: int = SIZE, h: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _save(array: np.ndarray | Image.Image, fmt: str = "JPEG", **kw) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        im = array if isinstance(array, Image.Image) else Image.fromarray(array)
        im.save(path, format=fmt, **kw)
    return make


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# A valid PNG header claiming 50000 x 50000 RGB pixels (7.5 GB decoded) with almost no data.
BOMB = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _exif_rotated() -> Image.Image:
    im = Image.fromarray(_face(7))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    im.info["exif"] = exif.tobytes()
    return im


@pytest.fixture(scope="session")
def huge_jpeg(tmp_path_factory) -> bytes:
    """A 12000x12000 JPEG (1.7 MB on disk, 432 MB as full-size RGB)."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    Image.new("L", (12000, 12000), 128).save(path, quality=50)
    return path.read_bytes()


# --------------------------------------------------------------------------- the corpus


@dataclass
class Item:
    """One entry of the corpus, placed the same way in each layout."""

    name: str  # file name; a str with surrogates stands for a non-UTF-8 name
    gender: int
    make: Callable[[Path], None]
    source: str = OK  # OK: a record; else a substring of the reason it is listed with
    decode: str = OK  # for records: OK or a substring of load_image's reason
    good: bool = False  # an ordinary face, also in the clean corpus
    layouts: tuple[str, ...] = ("lfw", "folders", "csv")

    @property
    def identity(self) -> str:
        return self.name.rsplit("_", 1)[0]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


def _items(huge: bytes, outside: Path) -> list[Item]:
    good = [Item(f"{ident}_{k:04d}.jpg", gender, _save(_face(seed)), good=True)
            for seed, (ident, gender, k) in enumerate([("Bob_Jones", MALE, 1), ("Bob_Jones", MALE, 2), ("Dan_Brown", MALE, 1),
                                                       ("Eve_Stone", FEMALE, 1), ("Eve_Stone", FEMALE, 2), ("Fay_Lake", FEMALE, 1)])]
    gray16 = (_face(11)[..., 0].astype(np.uint16) * 257)
    dark16 = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 1000).astype(np.uint16)  # at most 1000 of 65535: near black
    rgb = _face(12)
    truncated = _jpeg_bytes(_face(13))
    hostile = [
        # sorts first: the working size must not come from the first image sampled
        Item("Aaa_Wide_0001.png", MALE, _save(_face(14, w=60, h=SIZE), "PNG")),
        Item("Gray_Only_0001.png", FEMALE, _save(rgb[..., 0], "PNG")),
        Item("Rgba_Alpha_0001.png", MALE, _save(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "PNG")),
        Item("Pal_Ette_0001.png", FEMALE, _save(Image.fromarray(rgb).convert("P"), "PNG")),
        Item("Sixteen_Bit_0001.png", MALE, _save(Image.fromarray(gray16), "PNG")),
        Item("Dark_Sixteen_0001.png", FEMALE, _save(Image.fromarray(dark16), "PNG")),
        Item("Exif_Rotated_0001.jpg", MALE, _save(_exif_rotated(), exif=_exif_rotated().info["exif"])),
        Item("Huge_Photo_0001.jpg", FEMALE, _bytes(huge)),
        Item("Cut_Short_0001.jpg", MALE, _bytes(truncated[: len(truncated) // 2]), decode="truncated"),
        Item("Not_Image_0001.jpg", FEMALE, _bytes(b"this is text, not a JPEG"), decode="not an image"),
        Item("Bomb_Header_0001.png", MALE, _bytes(BOMB), decode="decompression bomb"),
        Item("Empty_File_0001.jpg", FEMALE, _bytes(b""), source="empty file"),
        Item(os.fsdecode(b"Jos\xe9_Garc\xeda_0001.jpg"), MALE, _save(_face(15)), layouts=("folders",)),
        Item("Pipe_Named_0001.jpg", FEMALE, _fifo, source="FIFO"),
        Item("Loop_Self_0001.jpg", MALE, _symlink("Loop_Self_0001.jpg"), source="symlink loop"),
        Item("Gone_Target_0001.jpg", FEMALE, _symlink("no-such-target.jpg"), source="broken symlink"),
        Item("Out_Link_0001.jpg", MALE, _symlink(str(outside)), source="outside the data folder"),
        Item("Folder_Like_0001.jpg", FEMALE, lambda p: p.mkdir(), source="a directory named like an image"),
        Item("Notes_File_0001.txt", MALE, _bytes(b"notes"), source="not an image file name", layouts=("lfw", "folders")),
    ]
    return good + hostile


@dataclass
class Corpus:
    data: Path  # what --data points at
    items: list[Item]
    paths: dict[str, Path]  # item name -> where it lies
    rows: dict[int, str] = field(default_factory=dict)  # csv: line number -> item name or a row kind
    extra: dict[str, str] = field(default_factory=dict)  # other listed entries: path -> reason substring
    options: dict[str, str] = field(default_factory=dict)


def _place(item: Item, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    item.make(path)


def _build_lfw(root: Path, items: list[Item], hostile: bool) -> Corpus:
    paths, extra = {}, {}
    for item in items:
        paths[item.name] = root / "images" / item.identity / item.name
        _place(item, paths[item.name])
    males = [i.name for i in items if i.gender == MALE and i.source == OK]
    females = [i.name for i in items if i.gender == FEMALE and i.source == OK]
    male_text, female_text = "\n".join(males) + "\n", "\n".join(females) + "\n"
    if hostile:
        for name, where, reason in (("Nobody_Listed_0001.jpg", "neither", "in neither"), ("Both_Lists_0001.jpg", "both", "in both")):
            path = root / "images" / name.rsplit("_", 1)[0] / name
            _place(Item(name, MALE, _save(_face(20))), path)
            extra[str(path)] = reason
            if where == "both":
                male_text, female_text = male_text + name + "\n", female_text + name + "\n"
        stray = root / "images" / "stray_0001.jpg"
        _save(_face(21))(stray)
        extra[str(stray)] = "not inside an identity folder"
        nested = root / "images" / "Bob_Jones" / "deeper" / "Bob_Jones_0009.jpg"
        _place(Item(nested.name, MALE, _save(_face(22))), nested)
        extra[str(nested)] = "nested below an identity folder"
        loop = root / "images" / "Bob_Jones" / "back_up"
        os.symlink("..", loop)
        extra[str(loop)] = "symlink loop"
        # Windows tools: a UTF-8 byte-order mark (which used to unlabel the first name) and CRLF line ends
        (root / "male_names.txt").write_bytes(b"\xef\xbb\xbf" + male_text.replace("\n", "\r\n").encode())
    else:
        (root / "male_names.txt").write_text(male_text)
    (root / "female_names.txt").write_text(female_text)
    return Corpus(root, items, paths, extra=extra)


def _build_folders(root: Path, items: list[Item], hostile: bool) -> Corpus:
    paths, extra = {}, {}
    for item in items:
        paths[item.name] = root / ("male" if item.gender == MALE else "female") / item.name
        _place(item, paths[item.name])
    if hostile:
        (root / "README.txt").write_text("about these faces")
        (root / "unsure").mkdir()
        _save(_face(23))(root / "unsure" / "x_0001.jpg")
        extra[str(root / "README.txt")] = extra[str(root / "unsure")] = "not inside the male or female class folder"
        loop = root / "female" / "loop_dir"
        os.symlink("../female", loop)
        extra[str(loop)] = "symlink loop"
        link = root / "male" / "Zz_Link_0001.jpg"  # sorts after its target, so the target stays the record
        os.symlink("Bob_Jones_0001.jpg", link)
        extra[str(link)] = "the same file as"
    return Corpus(root, items, paths, extra=extra)


def _build_csv(root: Path, items: list[Item], hostile: bool, outside: Path) -> Corpus:
    paths, rows = {}, {}
    header = ["Path", "Gender", "Identity", "Age"]  # capitalised, as spreadsheets write it
    lines: list[list[str]] = []

    def row(cells: list[str], what: str) -> None:
        lines.append(cells)
        rows[len(lines) + 1] = what

    for item in items:
        paths[item.name] = root / "files" / item.name
        _place(item, paths[item.name])
        row([f"files/{item.name}", "male" if item.gender == MALE else "F", item.identity, "30"], item.name)
    if hostile:
        row(["files/Bob_Jones_0001.jpg", "male", "Bob_Jones", "30"], "repeat of row 2")
        row(["./files/Bob_Jones_0001.jpg", "M", "Bob_Jones", "30"], "repeat of row 2")
        row(["files/Dan_Brown_0001.jpg", "unknown", "Dan_Brown", ""], "unknown gender")
        row(["files/Eve_Stone_0001.jpg", "", "Eve_Stone", ""], "no gender")
        row(["", "male", "Nobody", ""], "empty path")
        row(["files/Never_There_0001.jpg", "male", "Never_There", ""], "no such file")
        row(["../outside.jpg", "female", "Out", ""], "outside the data folder")
        row([str(outside), "female", "Out", ""], "outside the data folder")
        row(["files/a,b.jpg", "male", "x", "1", "extra"], "cells but the header has")
        inside = root / "files" / "Abs_Inside_0001.jpg"
        _save(_face(24))(inside)
        row([str(inside), "female", "Abs_Inside", ""], "record:Abs_Inside_0001.jpg")
        win = root / "files" / "win" / "Win_Path_0001.jpg"
        _place(Item(win.name, MALE, _save(_face(25))), win)
        row(["files\\win\\Win_Path_0001.jpg", "male", "Win_Path", ""], "record:Win_Path_0001.jpg")
        paths["Abs_Inside_0001.jpg"], paths["Win_Path_0001.jpg"] = inside, win
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(lines)
    if hostile:
        buf.write("\r\n")  # a trailing blank line names no file
    # Excel's "CSV UTF-8" writes a byte-order mark, which used to break the header
    (root / "faces.csv").write_bytes(("\ufeff" if hostile else "").encode() + buf.getvalue().encode())
    return Corpus(root / "faces.csv", items, paths, rows=rows)


def build(root: Path, layout: str, huge: bytes, hostile: bool = True) -> Corpus:
    outside = root / "outside.jpg"
    root.mkdir(parents=True)
    _save(_face(30))(outside)
    data = root / "data"
    data.mkdir()
    items = [i for i in _items(huge, outside) if layout in i.layouts and (hostile or i.good)]
    if layout == "lfw":
        return _build_lfw(data, items, hostile)
    if layout == "folders":
        return _build_folders(data, items, hostile)
    return _build_csv(data, items, hostile, outside)


LAYOUTS = ("lfw", "folders", "csv")


def _read(registry, layout: str, corpus: Corpus, **options):
    source = registry.get("dataset", layout).create(options, make_context())
    assert source.detect(str(corpus.data))
    records, skipped = source.read(str(corpus.data))
    return records, skipped, source


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_entry_is_a_record_or_listed_with_its_reason(registry, tmp_path, huge_jpeg, layout):
    corpus = build(tmp_path / "c", layout, huge_jpeg)
    records, skipped, _ = _read(registry, layout, corpus)
    by_path = {r.path: r for r in records}
    listed = {s["path"]: s["reason"] for s in skipped}
    assert len(listed) == len(skipped), "an entry is listed twice"
    assert not set(map(display_path, by_path)) & set(listed), "an entry is both a record and skipped"
    for item in corpus.items:
        path = str(corpus.paths[item.name])
        if item.source == OK:
            rec = by_path.get(path)
            assert rec is not None, f"{item.name} should be a record; listed as {listed.get(display_path(path))!r}"
            assert rec.gender == item.gender
        else:
            assert path not in by_path
            reason = listed.get(display_path(path), "")
            assert item.source in reason, (item.name, reason)
    for path, reason in corpus.extra.items():
        assert reason in listed.get(display_path(path), ""), (path, listed.get(display_path(path)))
    if layout == "csv":
        _check_rows(corpus, records, skipped)
    else:
        _check_walk(corpus, records, listed)


def _check_walk(corpus: Corpus, records, listed) -> None:
    """Nothing vanishes: each file, link, FIFO and image-named directory is a record or listed
    (itself, or a folder above it as a whole)."""
    accounted = {display_path(r.path) for r in records} | set(listed)
    for dirpath, dirnames, filenames in os.walk(corpus.data):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d)) or "." in d]:
            path = Path(dirpath, name)
            if path.parent == corpus.data and name in ("male_names.txt", "female_names.txt"):
                continue
            assert {display_path(p) for p in (path, *path.parents)} & accounted, f"{display_path(path)} vanished"


def _check_rows(corpus: Corpus, records, skipped) -> None:
    """Every data row of the manifest is a record or listed (by its row number) with the expected reason."""
    row_of_record = {}
    for line, what in corpus.rows.items():
        name = what.removeprefix("record:")
        item = next((i for i in corpus.items if i.name == name), None)
        if what.startswith("record:") or (item is not None and item.source == OK):
            row_of_record[line] = str(corpus.paths[name])
    record_paths = [r.path for r in records]
    assert sorted(record_paths) == sorted(row_of_record.values())
    reasons_by_row: dict[int, str] = {}
    for s in skipped:
        m = re.search(r":(\d+)\b", s["path"]) or re.search(r"\(row (\d+)\)", s["reason"])
        assert m, s
        reasons_by_row[int(m.group(1))] = s["reason"]
    for line, what in corpus.rows.items():
        if line in row_of_record:
            assert line not in reasons_by_row
            continue
        item = next((i for i in corpus.items if i.name == what), None)
        expected = item.source if item is not None else what
        assert expected in reasons_by_row.get(line, ""), (line, what, reasons_by_row.get(line))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ordinary_records_equal_a_clean_corpus(registry, tmp_path, huge_jpeg, layout):
    hostile = build(tmp_path / "h", layout, huge_jpeg)
    clean = build(tmp_path / "c", layout, huge_jpeg, hostile=False)

    def view(corpus: Corpus, records):
        root = corpus.data if corpus.data.is_dir() else corpus.data.parent
        good = {str(corpus.paths[i.name]) for i in corpus.items if i.good}
        return sorted((os.path.relpath(r.path, root), r.gender, r.identity, r.id, dict(r.labels)) for r in records if r.path in good)

    h_records, _, _ = _read(registry, layout, hostile)
    c_records, c_skipped, _ = _read(registry, layout, clean)
    assert c_skipped == [] and len(c_records) == 6
    assert view(hostile, h_records) == view(clean, c_records)
    if layout == "csv":
        assert all(dict(r.labels) == {"age": "30"} for r in c_records)  # the extra column travels on the record


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_record_decodes_or_is_skipped_by_the_split(registry, tmp_path, huge_jpeg, layout):
    corpus = build(tmp_path / "c", layout, huge_jpeg)
    records, _, _ = _read(registry, layout, corpus)
    expected = {str(corpus.paths[i.name]): i.decode for i in corpus.items if i.source == OK}
    expected.update({str(p): OK for n, p in corpus.paths.items() if n not in {i.name for i in corpus.items}})
    size, notice = working_size(records)
    assert size == SIZE  # the most common square size, not the wide image that sorts first
    assert notice and "most common square size" in notice
    splits = split(records, SplitSpec(per_class=None, train_per_class=0, pool_per_class=0))
    skipped = {s["path"]: s["reason"] for s in splits.skipped}
    for rec in records:
        want = expected[rec.path]
        if want == OK:
            assert display_path(rec.path) not in skipped, skipped.get(display_path(rec.path))
        else:
            assert want in skipped[display_path(rec.path)]
            with pytest.raises(ImageDecodeError, match=want):
                load_image(rec.path)
    usable = splits.eval
    assert sorted(r.path for r in usable) == sorted(r.path for r in records if expected[r.path] == OK)
    batch = DiskFaceSet(usable, size).all()
    assert tuple(batch.images.shape) == (len(usable), 3, SIZE, SIZE)
    assert bool(batch.images.isfinite().all())
    dark = next(k for k, r in enumerate(usable) if "Dark_Sixteen" in r.path)
    assert 0 < float(batch.images[dark].max()) <= 5 / 255  # 1000/65535 of full scale stays near black
    fingerprint = dataset_fingerprint(records, memo_dir=tmp_path / "memo")  # non-UTF-8 names hash too
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)


MEMORY_PROBE = r"""
import json, resource, sys
from sbpet_bench.api import FaceRecord
from sbpet_bench.data import DiskFaceSet
from sbpet_bench.images import load_image
paths = json.loads(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
records = [FaceRecord(p, 1, p, p) for p in paths]
DiskFaceSet(records, 40).all()
for p in paths:
    load_image(p)  # full size, as the split's usability check decodes
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_decoding_the_corpus_stays_small_in_memory(registry, tmp_path, huge_jpeg):
    corpus = build(tmp_path / "c", "folders", huge_jpeg)
    good = [i for i in corpus.items if i.source == OK and i.decode == OK]
    paths = [str(corpus.paths[i.name]) for i in good if i.name.isascii()]
    assert any("Huge_Photo" in p for p in paths)
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, json.dumps(paths)], capture_output=True, text=True,
                         timeout=300, check=True, cwd=Path(__file__).resolve().parent.parent)
    grown = int(out.stdout.strip().splitlines()[-1])
    # A full-size decode of the 12000x12000 photo alone is 432 MB as RGB; reduced at decode it is ~7 MB.
    assert grown < 150 * 2**20, f"peak memory grew by {grown / 2**20:.0f} MiB"


def test_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match="FIFO"):
        load_image(fifo)  # would block forever in open()


# --------------------------------------------------------------------------- whole-file encodings


def _lfw_with_names(root: Path, names: dict[int, list[bytes]], encode: Callable[[str], bytes]) -> dict[bytes, int]:
    """Images named by raw bytes in identity folders, and names lists written through ``encode``."""
    genders = {}
    for gender, raw_names in names.items():
        for k, raw in enumerate(raw_names):
            folder = root / "images" / os.fsdecode(raw.rsplit(b"_", 1)[0])
            folder.mkdir(parents=True, exist_ok=True)
            _save(_face(40 + k + 10 * gender))(folder / os.fsdecode(raw))
            genders[raw] = gender
    for gender, fname in ((MALE, "male_names.txt"), (FEMALE, "female_names.txt")):
        text = "\n".join(raw.decode("latin-1") for raw in names[gender]) + "\n"
        (root / fname).write_bytes(encode(text))
    return genders


def test_latin1_names_lists_need_a_declared_encoding(registry, tmp_path):
    # Image names on disk in Latin-1 bytes (not UTF-8) and lists in Latin-1: matched byte for byte.
    names = {MALE: [b"Jos\xe9_Garc\xeda_0001.jpg", b"Ian_Ross_0001.jpg"], FEMALE: [b"In\xe8s_Dupr\xe9_0001.jpg"]}
    genders = _lfw_with_names(tmp_path / "d", names, lambda t: t.encode("latin-1"))
    source = registry.get("dataset", "lfw").create({}, make_context())
    with pytest.raises(PluginError, match=r"male_names.txt is not UTF-8 text \(byte 0xE9 at line 1.*lfw.encoding=cp1252"):
        source.read(str(tmp_path / "d"))
    records, skipped = registry.get("dataset", "lfw").create({"encoding": "latin-1"}, make_context()).read(str(tmp_path / "d"))
    assert skipped == []
    assert {os.fsencode(os.path.basename(r.path)): r.gender for r in records} == genders
    assert "Jos\\xe9_Garc\\xeda/Jos\\xe9_Garc\\xeda_0001.jpg" in {r.id for r in records}  # printable ids


def test_latin1_list_matches_utf8_file_names(registry, tmp_path):
    # Lists from a Windows tool (cp1252) for images whose names on disk are UTF-8.
    root = tmp_path / "d"
    for name, gender in (("José_0001.jpg", MALE), ("Inès_0001.jpg", FEMALE)):
        (root / "images" / name.rsplit("_", 1)[0]).mkdir(parents=True)
        _save(_face(50))(root / "images" / name.rsplit("_", 1)[0] / name)
    (root / "male_names.txt").write_bytes("José_0001.jpg\n".encode("cp1252"))
    (root / "female_names.txt").write_bytes("Inès_0001.jpg\n".encode("cp1252"))
    records, skipped = registry.get("dataset", "lfw").create({"encoding": "cp1252"}, make_context()).read(str(root))
    assert skipped == [] and sorted((r.identity, r.gender) for r in records) == [("Inès", FEMALE), ("José", MALE)]


def test_utf16_names_list_is_read_by_its_byte_order_mark(registry, tmp_path):
    names = {MALE: [b"Ian_Ross_0001.jpg"], FEMALE: [b"Amy_Wong_0001.jpg"]}
    genders = _lfw_with_names(tmp_path / "d", names, lambda t: t.encode("utf-16"))
    records, skipped = registry.get("dataset", "lfw").create({}, make_context()).read(str(tmp_path / "d"))
    assert skipped == [] and {os.fsencode(os.path.basename(r.path)): r.gender for r in records} == genders


def _csv_corpus(root: Path) -> list[tuple[str, str, str]]:
    rows = [("files/José_0001.jpg", "male", "José"), ("files/Inès_0001.jpg", "female", "Inès")]
    for k, (rel, _, _) in enumerate(rows):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _save(_face(60 + k))(root / rel)
    return rows


def test_latin1_manifest_is_a_clear_error_until_declared(registry, tmp_path):
    rows = _csv_corpus(tmp_path)
    text = "path,gender,identity\n" + "".join(",".join(r) + "\n" for r in rows)
    (tmp_path / "m.csv").write_bytes(text.encode("cp1252"))
    with pytest.raises(PluginError, match=r"m.csv is not UTF-8 text \(byte 0xE9 at line 2.*csv.encoding=cp1252"):
        registry.get("dataset", "csv").create({}, make_context()).read(str(tmp_path / "m.csv"))
    records, skipped = registry.get("dataset", "csv").create({"encoding": "cp1252"}, make_context()).read(str(tmp_path / "m.csv"))
    assert skipped == [] and [(r.identity, r.gender) for r in records] == [("José", MALE), ("Inès", FEMALE)]


def test_utf16_tab_separated_manifest_is_read(registry, tmp_path):
    # Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated
    rows = _csv_corpus(tmp_path)
    text = "path\tgender\tidentity\r\n" + "".join("\t".join(r) + "\r\n" for r in rows)
    (tmp_path / "m.csv").write_bytes(text.encode("utf-16"))
    records, skipped = registry.get("dataset", "csv").create({}, make_context()).read(str(tmp_path / "m.csv"))
    assert skipped == [] and [(r.identity, r.gender) for r in records] == [("José", MALE), ("Inès", FEMALE)]
    (tmp_path / "m.csv").write_bytes(text.encode("utf-16-le"))  # no byte-order mark: say so
    with pytest.raises(PluginError, match="UTF-16 without a byte-order mark"):
        registry.get("dataset", "csv").create({}, make_context()).read(str(tmp_path / "m.csv"))


def test_conflicting_manifest_rows_are_an_error_naming_them(registry, tmp_path):
    rows = _csv_corpus(tmp_path)
    text = "path,gender,identity\n" + "".join(",".join(r) + "\n" for r in rows)
    text += "files/José_0001.jpg,female,José\n"  # row 4 contradicts row 2
    text += "./files/Inès_0001.jpg,female,Someone Else\n"  # row 5 contradicts row 3 through another spelling
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(PluginError, match=r"rows 2 and 4 \(files/José_0001.jpg: gender 'male' vs 'female'\); "
                                          r"rows 3 and 5 .*identity 'Inès' vs 'Someone Else'"):
        registry.get("dataset", "csv").create({}, make_context()).read(str(tmp_path / "m.csv"))


def test_outside_links_are_read_when_allowed(registry, tmp_path, huge_jpeg):
    corpus = build(tmp_path / "c", "folders", huge_jpeg)
    records, skipped, _ = _read(registry, "folders", corpus, allow_outside=True)
    out = str(corpus.paths["Out_Link_0001.jpg"])
    assert out in {r.path for r in records}
    assert not [s for s in skipped if "outside the data folder" in s["reason"]]
