"""Decoding face images robustly and moving them between uint8 arrays and tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .api import resize  # noqa: F401 - one resize for the harness and plugins


class ImageDecodeError(Exception):
    """An image that cannot be used; the message is the reason listed in the results."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the actual range to 8 bits instead of clipping.
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        return Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparent pixels onto black, as face crops usually are padded with black.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 RGB array, applying EXIF rotation.

    With ``size``, the image is centre-cropped to a square and resized to ``size``.
    Raises :class:`ImageDecodeError` with a reason for unreadable, truncated or empty files.
    """
    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode: truncated files fail here
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"unreadable or truncated image ({exc})") from None
    if im.width < 8 or im.height < 8:
        raise ImageDecodeError(f"image too small ({im.width}x{im.height})")
    if size is not None and (im.width != size or im.height != size):
        side = min(im.width, im.height)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(im, dtype=np.uint8)


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
