"""Readers that turn a folder or manifest into face records (no image is decoded here).

Every entry a source meets is either a record or listed in its skipped list with the reason, so
nothing vanishes. File policy (all three sources, see :class:`files.DataFolder`): only regular
files are used; symlinks are followed inside the data folder; anything whose real location is
outside the data folder (a symlink out, ``../``, an absolute path) is refused and listed as
"outside the data folder" unless ``<source>.allow_outside=true``; a second name for a file already
read is listed as the same file. Text files (names lists, manifests) are read as UTF-8 (a byte-order
mark is honoured, so Excel's "CSV UTF-8" and UTF-16 files work); other encodings must be declared
with ``<source>.encoding``. After :meth:`read`, a source's ``notices`` lists what it decided on the
user's behalf (which class folders it found, how identities were assigned).
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from sbpet_bench.api import FEMALE, MALE, DatasetSource, FaceRecord, Option, PluginError

from .files import DataFolder, display, read_text, skip

GENDER_WORDS = {"male": MALE, "m": MALE, "man": MALE, "men": MALE, "1": MALE,
                "female": FEMALE, "f": FEMALE, "woman": FEMALE, "women": FEMALE, "0": FEMALE}
CLASS_FOLDERS = {MALE: ("male", "males", "man", "men", "m"), FEMALE: ("female", "females", "woman", "women", "f")}
_ALLOW_OUTSIDE = Option(False, "read files whose real location is outside the data folder (symlinks out, ../, absolute paths)")


class LfwLayout(DatasetSource):
    """``images/<Identity>/<Identity>_NNNN.jpg`` (or the official ``lfw/`` folder) plus
    ``male_names.txt`` / ``female_names.txt``. A file named in both lists or in neither is listed as
    skipped with that reason. Names are matched byte for byte, so non-UTF-8 file names work when the
    lists use the same bytes (declare ``lfw.encoding``) or the same names in UTF-8."""

    name = "lfw"
    version = "2"
    description = "LFW layout: <Identity>/<Identity>_NNNN.jpg + male_names.txt / female_names.txt"
    options = {"encoding": Option("", "encoding of male_names.txt / female_names.txt when not UTF-8 (e.g. cp1252, latin-1)"),
               "allow_outside": _ALLOW_OUTSIDE}

    @staticmethod
    def _image_root(root: Path) -> Path | None:
        for candidate in (root / "images", root / "lfw", root / "lfw_funneled", root / "lfw-deepfunneled", root):
            if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
                return candidate
        return None

    def detect(self, path: str) -> bool:
        root = Path(path)
        return root.is_dir() and (root / "male_names.txt").exists() and (root / "female_names.txt").exists()

    def _names(self, file: Path) -> set[bytes]:
        """The file names in a names list as bytes: as UTF-8 and, for a declared encoding, as its own bytes."""
        encoding = self.opts["encoding"]
        names: set[bytes] = set()
        for line in read_text(file, encoding, "lfw.encoding").splitlines():
            name = line.strip()
            if name:
                names.add(name.encode("utf-8", "surrogateescape"))
                if encoding:
                    names.add(name.encode(encoding, "ignore"))
        return names

    def read(self, path: str):
        root = Path(path)
        self.notices: list[str] = []
        lists = {}
        for gender, fname in ((MALE, "male_names.txt"), (FEMALE, "female_names.txt")):
            file = root / fname
            if not file.exists():
                raise PluginError(f"{display(file)} is missing: the LFW layout needs male_names.txt and female_names.txt")
            lists[gender] = self._names(file)
        image_root = self._image_root(root)
        if image_root is None:
            raise PluginError(f"{display(root)} has no images/ (or lfw/) folder with one sub-folder per identity")
        folder = DataFolder(root, self.opts["allow_outside"], self.name)
        records, skipped = [], []
        for parts, file in folder.walk(image_root, skipped):
            if len(parts) != 2:
                where = "not inside an identity folder" if len(parts) == 1 else "nested below an identity folder"
                skipped.append(skip(file, f"{where} (the LFW layout is images/<Identity>/<file>)"))
                continue
            key = os.fsencode(parts[1])
            male, female = key in lists[MALE], key in lists[FEMALE]
            if male and female:
                skipped.append(skip(file, "named in both male_names.txt and female_names.txt"))
            elif not (male or female):
                skipped.append(skip(file, "named in neither male_names.txt nor female_names.txt"))
            else:
                records.append(FaceRecord(path=file, gender=MALE if male else FEMALE, identity=display(parts[0]),
                                          id=display("/".join(parts))))
        return records, skipped


def _identity_pattern(raw: str, option: str) -> re.Pattern | None:
    if not raw:
        return None
    try:
        pattern = re.compile(raw)
    except re.error as exc:
        raise PluginError(f"--option {option}={raw!r} is not a valid regular expression: {exc}") from None
    if pattern.groups != 1:
        raise PluginError(f"--option {option}={raw!r} must have exactly one (group), the identity; it has {pattern.groups}")
    return pattern


class ClassFolders(DatasetSource):
    """A folder per class: ``male/`` and ``female/`` (also man/woman, men/women, m/f, any case).

    Identity: ``folders.identity_pattern`` (a regex with one group, searched in the file stem) when
    given, else the first sub-folder below the class folder, else each image is its own identity.
    """

    name = "folders"
    version = "2"
    description = "a folder per class: male/ and female/ (identity from sub-folders, a file-name pattern, or per image)"
    options = {"identity_pattern": Option("", r"regex with one group giving the identity from a file stem, e.g. '(.+)_\d+$' "
                                              "for Jane_Doe_0001.jpg"),
               "allow_outside": _ALLOW_OUTSIDE}

    @staticmethod
    def _class_folders(root: Path) -> dict[int, list[Path]]:
        found: dict[int, list[Path]] = {MALE: [], FEMALE: []}
        try:
            children = sorted(p for p in root.iterdir() if p.is_dir())
        except OSError:
            return found
        for child in children:
            for gender, words in CLASS_FOLDERS.items():
                if child.name.lower() in words:
                    found[gender].append(child)
        return found

    def detect(self, path: str) -> bool:
        found = self._class_folders(Path(path))
        return bool(found[MALE]) and bool(found[FEMALE])

    def read(self, path: str):
        root = Path(path)
        self.notices = []
        found = self._class_folders(root)
        for gender, label in ((MALE, "male"), (FEMALE, "female")):
            if len(found[gender]) != 1:
                names = ", ".join(f"{display(p.name)}/" for p in found[gender]) or "none"
                raise PluginError(f"{display(root)}: the folders layout needs exactly one {label} folder "
                                  f"({'/'.join(CLASS_FOLDERS[gender])}, any case); found {names}")
        classes = [(MALE, found[MALE][0]), (FEMALE, found[FEMALE][0])]
        self.notices.append(f"folders: male images from {display(classes[0][1].name)}/, female images from "
                            f"{display(classes[1][1].name)}/")
        pattern = _identity_pattern(self.opts["identity_pattern"], "folders.identity_pattern")
        folder = DataFolder(root, self.opts["allow_outside"], self.name)
        records, skipped = [], []
        class_dirs = {p.name for _, p in classes}
        for entry in sorted(root.iterdir(), key=lambda p: os.fsencode(p.name)):
            if entry.name not in class_dirs:
                skipped.append(skip(entry, "not inside the male or female class folder"))
        own_identity = 0
        for gender, class_dir in classes:
            for parts, file in folder.walk(class_dir, skipped):
                record_id = display(f"{class_dir.name}/{'/'.join(parts)}")
                if pattern is not None:
                    match = pattern.search(os.path.splitext(parts[-1])[0])
                    if match is None or not match.group(1):
                        skipped.append(skip(file, f"folders.identity_pattern {pattern.pattern!r} does not match the file name"))
                        continue
                    identity = display(match.group(1))
                elif len(parts) > 1:
                    identity = display(parts[0])
                else:
                    identity, own_identity = record_id, own_identity + 1
                records.append(FaceRecord(file, gender, identity, record_id))
        if own_identity:
            self.notices.append(f"folders: {own_identity} images have no identity label (no sub-folder, no "
                                "folders.identity_pattern), so each is its own identity; for names like Jane_Doe_0001.jpg "
                                r"pass --option folders.identity_pattern='(.+)_\d+$'")
        both = {r.identity for r in records if r.gender == MALE} & {r.identity for r in records if r.gender == FEMALE}
        if both:
            self.notices.append(f"folders: {len(both)} identities have images in both class folders, e.g. {sorted(both)[0]!r}")
        return records, skipped


class CsvManifest(DatasetSource):
    """A CSV manifest: columns ``path`` and ``gender`` (male/female, m/f, man/woman, 1/0), optionally
    ``identity`` (without it, or when empty, each image is its own identity) and any further columns,
    kept as the record's ``labels``. Paths are relative to the manifest's folder. Header names are
    matched without regard to case or surrounding spaces; the delimiter may be ``,``, ``;`` or a tab.
    Rows with an unknown gender, a missing or unusable file, or an exact repeat of an earlier row are
    listed as skipped; two rows giving one file different labels are an error naming both rows.
    """

    name = "csv"
    version = "2"
    description = "a CSV manifest with columns path, gender and optionally identity and further labels"
    options = {"file": Option("", "the manifest inside the data folder when --data is a folder (default: the only .csv)"),
               "encoding": Option("", "encoding of the manifest when not UTF-8 (e.g. cp1252, latin-1)"),
               "allow_outside": _ALLOW_OUTSIDE}

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

    @staticmethod
    def _rows(text: str, manifest: Path) -> tuple[list[str], list[list[str]]]:
        """The normalised header and the rows, with the delimiter that makes a ``path`` column."""
        first = text.split("\n", 1)[0]
        for delimiter in (",", ";", "\t"):
            header = [h.strip().lower() for h in next(csv.reader([first], delimiter=delimiter), [])]
            if "path" in header:
                break
        else:
            raise PluginError(f"{display(manifest)}: no 'path' column in the header {first.strip()[:80]!r}; "
                              "the manifest needs columns path, gender (and optionally identity)")
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        return header, rows[1:]

    def _file(self, base: Path, rel: str) -> str:
        """The path a manifest entry names; tolerates Windows separators and legacy-encoded names on disk."""
        path = os.path.join(base, rel)  # an absolute rel stays absolute
        if "\\" in rel and not os.path.lexists(path):  # a manifest written on Windows
            path = os.path.join(base, rel.replace("\\", "/"))
        encoding = self.opts["encoding"]
        if encoding and not os.path.lexists(path):
            # The names on disk may be in the manifest's own legacy encoding rather than UTF-8: try those bytes.
            legacy = os.fsdecode(os.path.join(os.fsencode(base), rel.encode(encoding, "ignore")))
            path = legacy if os.path.lexists(legacy) else path
        return path

    def read(self, path: str):
        manifest = self._manifest(path)
        self.notices = []
        header, rows = self._rows(read_text(manifest, self.opts["encoding"], "csv.encoding"), manifest)
        missing = {"path", "gender"} - set(header)
        if missing:
            raise PluginError(f"{display(manifest)}: missing column(s) {', '.join(sorted(missing))}; "
                              "need path, gender (and optionally identity)")
        repeated = sorted({h for h in header if h and header.count(h) > 1})
        if repeated:
            raise PluginError(f"{display(manifest)}: column(s) {', '.join(repeated)} appear more than once in the header")
        col = {h: i for i, h in enumerate(header)}
        label_cols = [h for h in header if h and h not in ("path", "gender", "identity")]
        base = manifest.parent
        folder = DataFolder(base, self.opts["allow_outside"], self.name)
        records, skipped, conflicts = [], [], []
        first_row: dict[tuple[int, int], tuple[int, dict, tuple]] = {}  # (device, inode) -> first row's labels
        for line, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue  # a blank line names no file
            where = f"{display(manifest)}:{line}"
            if len(row) > len(header):
                skipped.append({"path": where, "reason": f"{len(row)} cells but the header has {len(header)} "
                                "(an unquoted delimiter in a value?)"})
                continue
            cell = {h: (row[i].strip() if i < len(row) else "") for h, i in col.items()}
            rel = cell["path"]
            if not rel:
                skipped.append({"path": where, "reason": "empty path"})
                continue
            gender = GENDER_WORDS.get(cell["gender"].lower())
            if gender is None:
                what = f"unknown gender {cell['gender']!r}" if cell["gender"] else "no gender"
                skipped.append({"path": f"{where} ({rel})", "reason": f"{what} (expected male/female, m/f, man/woman or 1/0)"})
                continue
            file = self._file(base, rel)
            st, reason = folder.resolve(file)
            reason = reason or folder.file_reason(file, st, once=False)
            if reason:
                skipped.append(skip(file, f"{reason} (row {line})"))
                continue
            # One file, however it is named (./a.jpg, a symlink): exact repeats are dropped, conflicts refused.
            given = {"gender": cell["gender"].lower(), "identity": cell.get("identity", "")} | {h: cell[h] for h in label_cols}
            normalised = (gender,) + tuple(given.values())[1:]
            key = (st.st_dev, st.st_ino)
            if key in first_row:
                first_line, first_given, first_normalised = first_row[key]
                if normalised == first_normalised:
                    skipped.append({"path": f"{where} ({rel})", "reason": f"a repeat of row {first_line} (same file, same labels)"})
                else:
                    differ = ", ".join(f"{k} {first_given[k]!r} vs {v!r}" for k, v in given.items() if v != first_given[k])
                    conflicts.append(f"rows {first_line} and {line} ({rel}: {differ})")
                continue
            first_row[key] = (line, given, normalised)
            identity = cell.get("identity", "") or rel
            labels = {h: cell[h] for h in label_cols if cell[h]}
            records.append(FaceRecord(file, gender, identity, rel, labels))
        if conflicts:
            shown = "; ".join(conflicts[:10]) + (f"; and {len(conflicts) - 10} more" if len(conflicts) > 10 else "")
            raise PluginError(f"{display(manifest)}: one file is given different labels by {shown}; "
                              "each file needs one gender and identity (delete or correct the conflicting rows)")
        if "identity" not in col:
            self.notices.append("csv: the manifest has no identity column, so each image is its own identity")
        return records, skipped
