"""Safe image decoding: one image file to a resized uint8 RGB array, or a named reason why not.

Only JPEG and PNG are opened; a decompression bomb is an error, not a warning; truncated files
fail instead of being padded; grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB.
The resize is the notebook's `Resize((S, S))` on a PIL image (bilinear with antialiasing), so the
cached pixels are exactly what its `val_transform` sees before `ToTensor`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageFile

from mlcore.errors import BadImage

# 50 MP is far above any camera frame of this task and well below what exhausts memory.
MAX_IMAGE_PIXELS = int(os.environ.get("DATASLAYER_MAX_IMAGE_PIXELS", 50_000_000))
FORMATS = ("JPEG", "PNG")
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = 2 * MAX_IMAGE_PIXELS  # PIL's hard error stays as a second line behind ours


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to 8-bit RGB (16-bit and float images are scaled, not clipped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert one image to RGB, raising BadImage with the reason."""
    if os.path.getsize(path) == 0:
        raise BadImage("empty file")
    try:
        with Image.open(path, formats=FORMATS) as img:
            # Checked on the header, before any pixel is decoded. PIL's own guard only warns between
            # 1x and 2x its limit, and turning that warning into an error is not thread-safe.
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadImage(
                    f"too many pixels ({width}x{height}; decompression bomb guard, limit {MAX_IMAGE_PIXELS})"
                )
            img.load()
            return _to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too many pixels (decompression bomb guard): {exc}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not a JPEG or PNG image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"cannot decode: {exc}") from None


def decode_resized(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one file to a (size, size, 3) uint8 array, as the notebook's Resize((size, size)) does."""
    img = open_rgb(path)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_into(
    paths: Iterable[str | os.PathLike],
    size: int,
    out: np.ndarray,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[int, str]:
    """Decode every path into out[i] (N, size, size, 3); return {index: reason} for bad files (left black).

    Threads, not processes: Pillow releases the GIL while decoding and resizing, so threads use
    every core, and they also work inside daemonic Celery pool children, which may not fork.
    """
    paths = list(paths)
    bad: dict[int, str] = {}

    def one(i: int) -> int:
        try:
            out[i] = decode_resized(paths[i], size)
        except BadImage as exc:
            out[i] = 0
            bad[i] = str(exc)
        return i

    workers = workers or min(32, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for n, _ in enumerate(pool.map(one, range(len(paths))), 1):
            if progress is not None and (n % 64 == 0 or n == len(paths)):
                progress(n)
    return bad
