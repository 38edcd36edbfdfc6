"""Reading a data folder defensively: text in a known encoding, and a walk that lists every entry it cannot use.

Nothing here decodes an image; it only decides which directory entries are regular image files that
may be opened, and says why each other entry was left out.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
from pathlib import Path
from typing import Iterator

from sbpet_bench.api import PluginError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}

# UTF-32 before UTF-16: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def display(path: str | os.PathLike) -> str:
    """Printable text for a path: bytes of a file name that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def skip(path: str | os.PathLike, reason: str) -> dict[str, str]:
    return {"path": display(path), "reason": reason}


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def read_text(file: Path, encoding: str, option: str) -> str:
    """The text of ``file``: in the declared ``encoding``, else by its byte-order mark, else strict UTF-8.

    Anything else is a :class:`PluginError` naming the file, the first bad byte and ``option`` (the
    ``--option`` that declares the encoding), rather than a guess that would mislabel names silently.
    """
    try:
        st = os.stat(file)
    except OSError as exc:
        raise PluginError(f"{display(file)} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else _kind(st.st_mode)
        raise PluginError(f"{display(file)} is {kind}, not a text file")
    raw = Path(file).read_bytes()
    if encoding:
        try:
            return raw.decode(encoding).removeprefix("\ufeff")
        except LookupError:
            raise PluginError(f"--option {option}={encoding}: unknown encoding (e.g. utf-8, cp1252, latin-1, utf-16)") from None
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise PluginError(f"{display(file)} is not valid {encoding} text (byte 0x{raw[exc.start]:02X} at line {line}); "
                              f"fix --option {option}") from None
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return raw.decode(codec, errors="strict").removeprefix("\ufeff")
    if b"\x00" in raw:
        raise PluginError(f"{display(file)} contains NUL bytes: it looks like UTF-16 without a byte-order mark; "
                          f"re-save it as UTF-8 or declare --option {option}=utf-16-le (or utf-16-be)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PluginError(f"{display(file)} is not UTF-8 text (byte 0x{raw[exc.start]:02X} at line {line}; it may be "
                          f"Latin-1 / Windows-1252, as Excel's plain 'CSV' saves): re-save it as UTF-8 (Excel: 'CSV UTF-8') "
                          f"or declare its encoding with --option {option}=cp1252 (or latin-1)") from None


class DataFolder:
    """The folder a source reads and its policy for what may be opened.

    Only regular files are ever used (FIFOs block, devices never end). Symlinks are followed when
    they lead to a place inside the data folder; a file or folder whose real location is outside it
    (a symlink out, ``../`` or an absolute path in a manifest) is refused and listed as "outside the
    data folder" unless the source's ``allow_outside`` option is set. Each file is used once: a second
    name for a file already read (a symlink or hard link to it) is listed as the same file.
    """

    def __init__(self, root: str | Path, allow_outside: bool, source: str):
        self.root = Path(root)
        self.real = os.path.realpath(self.root)
        self.allow_outside = allow_outside
        self.source = source
        self.seen: dict[tuple[int, int], str] = {}  # (device, inode) -> the first path it was read as

    def inside(self, real: str) -> bool:
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)

    def resolve(self, path: str) -> tuple[os.stat_result | None, str | None]:
        """(stat of the target, None) if ``path`` may be opened under the policy, else (stat or None, reason)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None, "broken symlink (its target is missing)" if os.path.islink(path) else "no such file"
        except OSError as exc:
            return None, "symlink loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        real = os.path.realpath(path)
        if not self.inside(real) and not self.allow_outside:
            return st, (f"outside the data folder (leads to {display(real)}); to read it, pass "
                        f"--option {self.source}.allow_outside=true")
        return st, None

    def file_reason(self, path: str, st: os.stat_result, once: bool = True) -> str | None:
        """Why the entry ``path`` (``st`` = its target's stat) is not a usable image file, or None.

        With ``once``, a second name for a file already accepted is refused as the same file.
        """
        if stat.S_ISDIR(st.st_mode):
            return "a directory named like an image"
        if not stat.S_ISREG(st.st_mode):
            return f"{_kind(st.st_mode)}, not a regular file"
        if st.st_size == 0:
            return "empty file (0 bytes)"
        if not once:
            return None
        first = self.seen.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            return f"the same file as {display(first)} (a link to it)"
        return None

    def walk(self, folder: Path, skipped: list[dict[str, str]]) -> Iterator[tuple[tuple[str, ...], str]]:
        """(parts relative to ``folder``, path) for each usable image file below it, in a stable order.

        Every other entry is appended to ``skipped`` with its reason; folders are entered once each.
        """
        st, reason = self.resolve(str(folder))
        if reason:
            raise PluginError(f"{display(folder)}: {reason}")
        yield from self._walk(str(folder), (), {(st.st_dev, st.st_ino)}, skipped)

    def _walk(self, dirpath: str, parts: tuple[str, ...], visited: set, skipped: list) -> Iterator[tuple[tuple[str, ...], str]]:
        try:
            entries = sorted(os.scandir(dirpath), key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            skipped.append(skip(dirpath, f"folder cannot be read ({exc.strerror})"))
            return
        for entry in entries:
            path, name = entry.path, entry.name
            is_image_name = os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
            if entry.is_symlink():
                st, reason = self.resolve(path)
                if reason:
                    skipped.append(skip(path, reason))
                    continue
            else:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    skipped.append(skip(path, f"cannot be read ({exc.strerror})"))
                    continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    skipped.append(skip(path, "symlink loop (a link to a folder already read)"))
                    continue
                visited.add(key)
                if is_image_name:
                    skipped.append(skip(path, "a directory named like an image"))
                yield from self._walk(path, parts + (name,), visited, skipped)
                continue
            if not is_image_name:
                suffix = os.path.splitext(name)[1]
                skipped.append(skip(path, f"not an image file name ({display(suffix) or 'no suffix'})"))
                continue
            reason = self.file_reason(path, st)
            if reason:
                skipped.append(skip(path, reason))
                continue
            yield parts + (name,), path
