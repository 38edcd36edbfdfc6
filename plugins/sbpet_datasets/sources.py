"""Readers that turn a folder or manifest into face records (no image is decoded here)."""

from __future__ import annotations

import csv
from pathlib import Path

from sbpet_bench.api import FEMALE, MALE, DatasetSource, FaceRecord, Option, PluginError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
GENDER_WORDS = {"male": MALE, "m": MALE, "man": MALE, "1": MALE, "female": FEMALE, "f": FEMALE, "woman": FEMALE, "0": FEMALE}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


class LfwLayout(DatasetSource):
    """``images/<Identity>/<Identity>_NNNN.jpg`` (or the official ``lfw/`` folder) plus
    ``male_names.txt`` / ``female_names.txt``. Names in both lists or in neither are unlabelled."""

    name = "lfw"
    version = "1"
    description = "LFW layout: <Identity>/<Identity>_NNNN.jpg + male_names.txt / female_names.txt"

    @staticmethod
    def _image_root(root: Path) -> Path | None:
        for candidate in (root / "images", root / "lfw", root / "lfw_funneled", root / "lfw-deepfunneled", root):
            if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
                return candidate
        return None

    def detect(self, path: str) -> bool:
        root = Path(path)
        return root.is_dir() and (root / "male_names.txt").exists() and (root / "female_names.txt").exists()

    def read(self, path: str):
        root = Path(path)
        lists = {}
        for gender, fname in ((MALE, "male_names.txt"), (FEMALE, "female_names.txt")):
            file = root / fname
            if not file.exists():
                raise PluginError(f"{file} is missing: the LFW layout needs male_names.txt and female_names.txt")
            lists[gender] = {line.strip() for line in file.read_text().splitlines() if line.strip()}
        both = lists[MALE] & lists[FEMALE]
        image_root = self._image_root(root)
        if image_root is None:
            raise PluginError(f"{root} has no images/ (or lfw/) folder with one sub-folder per identity")
        records = []
        for ident_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
            for file in sorted(ident_dir.iterdir()):
                if not file.is_file():
                    continue
                name = file.name
                gender = None if name in both else MALE if name in lists[MALE] else FEMALE if name in lists[FEMALE] else None
                records.append(FaceRecord(path=str(file), gender=gender, identity=ident_dir.name,
                                          id=f"{ident_dir.name}/{name}"))
        return records, []


class ClassFolders(DatasetSource):
    """``male/`` and ``female/`` folders; identity = a sub-folder name, else the file stem up to
    the last underscore (``Jane_Doe_0001.jpg`` -> ``Jane_Doe``), else the file itself."""

    name = "folders"
    version = "1"
    description = "a folder per class: male/ and female/ (identity from sub-folders or file names)"

    def detect(self, path: str) -> bool:
        root = Path(path)
        return (root / "male").is_dir() and (root / "female").is_dir()

    def read(self, path: str):
        root = Path(path)
        records, skipped = [], []
        for gender, sub in ((MALE, "male"), (FEMALE, "female")):
            folder = root / sub
            if not folder.is_dir():
                raise PluginError(f"{folder} is missing: the folders layout needs male/ and female/")
            for file in sorted(folder.rglob("*")):
                if not file.is_file():
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append({"path": str(file), "reason": f"not an image file name ({file.suffix or 'no suffix'})"})
                    continue
                rel = file.relative_to(folder)
                if len(rel.parts) > 1:
                    identity = rel.parts[0]
                else:
                    stem = file.stem
                    identity = stem.rsplit("_", 1)[0] if "_" in stem else stem
                records.append(FaceRecord(str(file), gender, identity, f"{sub}/{rel.as_posix()}"))
        return records, skipped


class CsvManifest(DatasetSource):
    """A CSV with columns ``path, gender, identity``; paths relative to the CSV's folder.
    Gender is male/female (or m/f, 1/0); anything else makes the row unlabelled."""

    name = "csv"
    version = "1"
    description = "a CSV manifest with columns path, gender, identity"
    options = {"file": Option("", "the manifest inside the data folder when --data is a folder (default: the only .csv)")}

    def _manifest(self, path: str) -> Path:
        p = Path(path)
        if p.is_file():
            return p
        if self.opts["file"]:
            return p / self.opts["file"]
        found = sorted(p.glob("*.csv"))
        if len(found) != 1:
            raise PluginError(f"{p}: expected exactly one .csv manifest, found {len(found)}; name it with --option csv.file=NAME")
        return found[0]

    def detect(self, path: str) -> bool:
        p = Path(path)
        return (p.is_file() and p.suffix.lower() == ".csv") or (p.is_dir() and len(list(p.glob("*.csv"))) == 1)

    def read(self, path: str):
        manifest = self._manifest(path)
        base = manifest.parent
        records, skipped = [], []
        with open(manifest, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "gender", "identity"} - set(reader.fieldnames or [])
            if missing:
                raise PluginError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}; need path, gender, identity")
            for line, row in enumerate(reader, start=2):
                rel = (row["path"] or "").strip()
                if not rel:
                    skipped.append({"path": f"{manifest}:{line}", "reason": "empty path"})
                    continue
                gender = GENDER_WORDS.get((row["gender"] or "").strip().lower())
                identity = (row["identity"] or "").strip() or rel
                full = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                records.append(FaceRecord(str(full), gender, identity, rel))
        return records, skipped
