"""Decoding face images robustly and moving them between uint8 arrays and tensors."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .api import resize  # noqa: F401 - one resize for the harness and plugins

# Images whose shorter side exceeds this are reduced while decoding (JPEG: DCT scaling, others: an
# integer box reduction), so a 12000x12000 photo costs megabytes, not gigabytes. Faces are used at
# a few hundred pixels at most, so nothing a metric sees is lost.
MAX_DECODE_SIDE = 2048

_SIXTEEN_BIT_TO_8 = np.round(np.arange(65536, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)


class ImageDecodeError(Exception):
    """An image that cannot be used; the message is the reason listed in the results."""


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 in a file name become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def check_regular_file(path: str | os.PathLike) -> os.stat_result:
    """Stat ``path`` (following links) and refuse anything but a non-empty regular file.

    Opening a FIFO blocks forever and a device can be endless, so only regular files are ever opened.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageDecodeError("broken symlink (its target is missing)" if os.path.islink(path) else "file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageDecodeError("symlink loop") from None
        raise ImageDecodeError(f"cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError(f"{_file_kind(st.st_mode)}, not a regular file")
    if st.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    return st


def _sixteen_bit_range(im: Image.Image) -> float:
    """The full-scale value of a high-bit-depth grayscale image: its bit depth, not its brightest pixel."""
    if im.mode.startswith("I;16") or im.format in ("PNG", "APNG"):
        return 65535.0  # PNG stores 16-bit grayscale; a dark image must stay dark
    peak = float(np.asarray(im).max(initial=0))
    return 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else float(2**31 - 1)


def _to_8bit(im: Image.Image) -> Image.Image:
    """High-bit-depth and float grayscale to 8-bit "L", scaled by the format's range instead of clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray(_SIXTEEN_BIT_TO_8[np.asarray(im).astype(np.uint16, copy=False)], "L")
    if im.mode == "I":
        hi = _sixteen_bit_range(im)
        arr = np.asarray(im)
        if hi == 65535.0:
            return Image.fromarray(_SIXTEEN_BIT_TO_8[np.clip(arr, 0, 65535).astype(np.uint16)], "L")
        return Image.fromarray(np.clip(arr.astype(np.float32) * np.float32(255.0 / hi) + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparent pixels onto black, as face crops usually are padded with black.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _open(path: str | Path) -> Image.Image:
    # Pillow refuses images claiming more pixels than twice its MAX_IMAGE_PIXELS (a decompression bomb)
    # and warns between one and two times; the warning is noise here because large images are reduced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _decode_reduced(im: Image.Image, max_side: int) -> Image.Image:
    """Decode ``im``; when its shorter side is at least twice ``max_side``, reduce it towards (never below) that."""
    if im.format == "JPEG" and min(im.size) >= 2 * max_side:
        im.draft(im.mode if im.mode in ("RGB", "L") else None, (max_side, max_side))  # decodes at 1/2, 1/4 or 1/8
    im.load()  # forces a full decode: truncated files fail here
    factor = min(im.size) // max_side
    if factor >= 2:
        im = _to_rgb(im)  # reduce() works on 8-bit modes only
        im = im.reduce(factor)
    return im


def load_image(path: str | Path, size: int | None = None, max_side: int = MAX_DECODE_SIDE) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 RGB array, applying EXIF rotation.

    With ``size``, the image is centre-cropped to a square and resized to ``size``. An image whose
    shorter side is at least twice ``max_side`` is reduced by an integer factor while decoding (aspect
    kept, shorter side still >= ``max_side``), so huge photos never need gigabytes.
    Raises :class:`ImageDecodeError` with a reason for unreadable, truncated, empty or non-regular
    files and for decompression bombs (headers claiming more pixels than Pillow's safety limit).
    """
    check_regular_file(path)
    try:
        with _open(path) as im:
            im = _decode_reduced(im, max(int(max_side), size or 0, 8))
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused as a possible decompression bomb ({exc})") from None
    except MemoryError:
        raise ImageDecodeError("too large to decode in memory") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"unreadable or truncated image ({exc})") from None
    if im.width < 8 or im.height < 8:
        raise ImageDecodeError(f"image too small ({im.width}x{im.height})")
    if size is not None and (im.width != size or im.height != size):
        side = min(im.width, im.height)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(im, dtype=np.uint8)


def image_header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file header only (no pixel decode); None for anything unusable."""
    try:
        check_regular_file(path)
        with _open(path) as im:
            return im.size
    except (ImageDecodeError, UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
        return None


def stack_uint8(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(arrays, axis=0)


def uint8_to_tensor(batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1] on ``device``."""
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, rounding to the nearest level."""
    return images.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_png(array: np.ndarray, path: str | Path) -> None:
    Image.fromarray(array).save(path, format="PNG")
