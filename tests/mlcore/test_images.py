"""Tests for mlcore.images: bad files are refused with a reason, every mode becomes 8-bit RGB."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

import mlcore.images as images
from mlcore.augment import eval_preprocess
from mlcore.images import BadImage, decode_into, decode_resized, open_rgb


@pytest.fixture(autouse=True)
def _restore_pil_limit(monkeypatch):
    """open_rgb assigns PIL's global Image.MAX_IMAGE_PIXELS; put it back after each test."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def _rgb(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """A smooth colourful test picture (JPEG-friendly) with some noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 30, (h, w, 3))
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(h + w - 2, 1)], -1)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _save(img: Image.Image, path: Path, fmt: str) -> Path:
    img.save(path, format=fmt)
    return path


def _jpeg(tmp_path: Path, name: str = "ok.jpg", h: int = 40, w: int = 56) -> Path:
    return _save(Image.fromarray(_rgb(h, w)), tmp_path / name, "JPEG")


BAD_FILES = {
    "corrupt.jpg": lambda p, ok: p.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 5),
    "truncated.jpg": lambda p, ok: p.write_bytes(ok.read_bytes()[: ok.stat().st_size // 2]),
    "empty.jpg": lambda p, ok: p.write_bytes(b""),
    "text.png": lambda p, ok: p.write_text("hello, I am a text file\n"),
    "gif.jpg": lambda p, ok: _save(Image.open(ok).convert("P"), p, "GIF"),
    "bmp.jpg": lambda p, ok: _save(Image.open(ok), p, "BMP"),
    "tiff.jpg": lambda p, ok: _save(Image.open(ok), p, "TIFF"),
}
REASONS = {
    "empty.jpg": "empty",
    "gif.jpg": "not a JPEG or PNG",
    "bmp.jpg": "not a JPEG or PNG",
    "tiff.jpg": "not a JPEG or PNG",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_refused_with_a_reason(tmp_path, name):
    ok = _jpeg(tmp_path)
    path = tmp_path / name
    BAD_FILES[name](path, ok)
    with pytest.raises(BadImage) as info:
        decode_resized(path, 16)
    assert str(info.value).strip()
    assert REASONS.get(name, "") in str(info.value)


@pytest.mark.parametrize(
    "limit", [1000, 3000]
)  # 64x64 = 4096 px: over 2x the limit (PIL error) and within 2x (PIL warning)
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, limit):
    path = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "bomb.png", "PNG")
    assert decode_resized(path, 8).shape == (8, 8, 3)  # fine under the default limit
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(BadImage, match="too many pixels"):
        decode_resized(path, 8)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_guard_holds_while_another_thread_decodes(tmp_path, monkeypatch):
    """Deterministic interleaving of two open_rgb calls, as decode_into's worker threads can produce."""
    small = _save(Image.fromarray(_rgb(8, 8)), tmp_path / "small.png", "PNG")
    bomb = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "bomb.png", "PNG")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 3000)
    real_open, a_inside, b_inside, a_done = Image.open, threading.Event(), threading.Event(), threading.Event()

    def scripted_open(path, *args, **kwargs):
        if Path(path) == small:  # thread A: wait until B has entered its warnings context
            a_inside.set()
            b_inside.wait(10)
        else:  # thread B: open the bomb only after A has left its warnings context
            b_inside.set()
            a_done.wait(10)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", scripted_open)
    result = {}

    def run_b():
        try:
            result["b"] = open_rgb(bomb)
        except BadImage as exc:
            result["b"] = exc

    thread_a = threading.Thread(target=open_rgb, args=(small,))
    thread_a.start()
    a_inside.wait(10)
    thread_b = threading.Thread(target=run_b)
    thread_b.start()
    thread_a.join(10)
    a_done.set()
    thread_b.join(10)
    assert isinstance(result["b"], BadImage)


def test_grayscale_jpeg_becomes_rgb(tmp_path):
    path = _save(Image.fromarray(_rgb(24, 24)[..., 0], mode="L"), tmp_path / "gray.jpg", "JPEG")
    out = decode_resized(path, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert np.array_equal(out[..., 0], np.asarray(Image.open(path)))


@pytest.mark.parametrize(
    ("mode", "fmt", "name"), [("RGBA", "PNG", "rgba.png"), ("P", "PNG", "palette.png"), ("CMYK", "JPEG", "cmyk.jpg")]
)
def test_other_modes_convert_like_pil(tmp_path, mode, fmt, name):
    src = Image.fromarray(_rgb(24, 24))
    if mode == "RGBA":
        src = src.convert("RGBA")
        src.putalpha(Image.fromarray(np.tile(np.arange(0, 240, 10, dtype=np.uint8), (24, 1))))
    else:
        src = src.convert(mode)
    path = _save(src, tmp_path / name, fmt)
    assert Image.open(path).mode == mode
    out = decode_resized(path, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(Image.open(path).convert("RGB")))


def test_16_bit_grayscale_uses_the_full_range(tmp_path):
    """A full-range 16-bit gradient maps onto 0..255, scaled rather than clipped."""
    grad = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    path = _save(Image.fromarray(grad), tmp_path / "g16.png", "PNG")
    assert Image.open(path).mode.startswith("I")
    out = decode_resized(path, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    flat = out[..., 0].ravel().astype(int)
    assert flat.min() == 0 and flat.max() == 255
    assert np.all(np.diff(flat) >= 0) and len(np.unique(flat)) > 200
    assert np.abs(flat - grad.ravel() / 65535 * 255).max() <= 1


@pytest.mark.parametrize(("which", "size"), [("demo", 32), ("demo", 224), ("odd", 48)])
def test_decode_then_eval_preprocess_equals_notebook_val_transform(demo_root, tmp_path, which, size):
    if which == "demo":
        path = sorted((demo_root / "test").iterdir())[0]
    else:
        path = _save(Image.fromarray(_rgb(61, 37)), tmp_path / "odd.png", "PNG")  # non-square, upscaled on one side
    val_transform = Compose([Resize((size, size)), ToTensor(), Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
    expected = val_transform(Image.open(path).convert("RGB"))
    got = eval_preprocess(torch.from_numpy(decode_resized(path, size).copy()).permute(2, 0, 1)[None])[0]
    assert got.shape == expected.shape == (3, size, size)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_decode_into_fills_rows_and_zeroes_bad_ones(tmp_path):
    good = [_jpeg(tmp_path, f"g{i}.jpg", 30 + i, 40) for i in range(3)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = [good[0], broken, good[1], empty, good[2]]
    out = np.full((len(paths), 20, 20, 3), 255, dtype=np.uint8)  # stale data that must be overwritten
    seen = []
    bad = decode_into(paths, 20, out, workers=2, progress=seen.append)
    assert set(bad) == {1, 3} and all(isinstance(r, str) and r for r in bad.values())
    assert not out[1].any() and not out[3].any()
    for i in (0, 2, 4):
        assert np.array_equal(out[i], decode_resized(paths[i], 20))
    assert seen and seen[-1] == len(paths)
