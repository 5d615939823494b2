"""The image cache: every image decoded once, resized, and kept as uint8 where training reads it.

Decoding dominates the notebook's cost (PIL decode + resize of every image, every epoch). Here a
dataset is decoded once into an (N, S, S, 3) uint8 array, written to disk under a key made of the
dataset fingerprint and image size (so the next job on the same data skips decoding), then held
on the GPU when it fits a memory budget, else in pinned host memory, else read from the on-disk
array (memory-mapped) batch by batch. The NHWC array viewed as NCHW is a channels_last tensor,
which is the layout the model runs in on CUDA.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from mlcore import images
from mlcore.disk import disk_full, ensure_free
from mlcore.engine import gpu_fraction
from mlcore.images import BadImage, decode_into, decode_resized

CACHE_VERSION = 1  # bump when decoding changes, so stale caches are not reused
GPU_DECODE_BATCH = 256
RESIZE_CHUNK = 64  # images per resize on the device: 64 x 3 x 480 x 640 floats is 236 MB


def default_cache_dir() -> Path:
    """Where decoded datasets are kept: $DATASLAYER_CACHE_DIR or ~/.cache/dataslayer."""
    return Path(os.environ.get("DATASLAYER_CACHE_DIR") or Path.home() / ".cache" / "dataslayer")


def _budget(env: str, default: float) -> float:
    return float(os.environ[env]) * 2**30 if os.environ.get(env) else default


def gpu_budget_bytes(device: torch.device) -> float:
    """Bytes of GPU memory the cache may take: $DATASLAYER_CACHE_GPU_GB or 40% of free memory.

    On a GPU shared by job slots (mlcore.engine.gpu_fraction) both are divided: the budget is that
    share of $DATASLAYER_CACHE_GPU_GB, or 40% of the slot's memory (its share of the total, or the free
    memory if less), so the slots' caches and training together never ask for more than the GPU has.
    """
    if device.type != "cuda":
        return 0.0
    share = gpu_fraction()
    free, total = torch.cuda.mem_get_info(device)
    if os.environ.get("DATASLAYER_CACHE_GPU_GB"):
        return share * _budget("DATASLAYER_CACHE_GPU_GB", 0.0)
    return 0.4 * min(free, share * total)


def host_budget_bytes() -> float:
    """Bytes of host memory the cache may take: $DATASLAYER_CACHE_HOST_GB or half the available memory."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:  # psutil is optional for the bare engine
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return _budget("DATASLAYER_CACHE_HOST_GB", 0.5 * available)


@dataclass
class ImageCache:
    """Decoded images as an (N, 3, S, S) uint8 tensor plus the files that could not be decoded."""

    images: torch.Tensor
    bad: dict[int, str]
    location: str  # "cuda", "pinned", "memory" or "disk"
    source: str  # "decoded" or "disk cache"
    seconds: float

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        """Side of every cached image, in pixels."""
        return self.images.shape[-1]


def _read_plain_jpeg(path: Path) -> torch.Tensor | None:
    """The file's bytes when its header says plain RGB JPEG within the pixel limit and the stream is whole, else
    None (PIL decides)."""
    import torchvision.io as tio

    try:
        with Image.open(path) as probe:  # reads the header only: format, mode, size
            fmt, (w, h) = probe.format, probe.size
            if w * h > images.MAX_IMAGE_PIXELS or fmt != "JPEG" or probe.mode != "RGB":
                return None  # PNG, CMYK, bombs: the checked CPU path decides
        data = tio.read_file(str(path))
    except Exception:
        return None  # broken files: the checked CPU path names the reason
    # A truncated file lacks the end-of-image marker. PIL refuses it by name; a decoder that pads the
    # missing part would cache half an image, so such files go the checked way too.
    return data if data[-2:].tolist() == [0xFF, 0xD9] else None


def _resize_batch(imgs: list[torch.Tensor], size: int) -> torch.Tensor:
    """Stack same-shape uint8 (3, H, W) images and resize them in one antialiased bilinear pass."""
    from torch.nn import functional as F

    x = torch.stack(imgs)
    if x.shape[-2:] == (size, size):
        return x
    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _gpu_decode_into(
    paths: Sequence[Path], size: int, out: np.ndarray, device: torch.device, progress
) -> dict[int, str]:
    """Batch-decode JPEGs with nvjpeg on the GPU and resize there; other files go through PIL."""
    import torchvision.io as tio

    bad: dict[int, str] = {}

    def pil(i: int) -> None:
        try:
            out[i] = decode_resized(paths[i], size)
        except BadImage as exc:
            out[i], bad[i] = 0, str(exc)

    # Header probes and file reads are per-file Python work: threads keep them off the GPU's critical path.
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 1), thread_name_prefix="read") as pool:
        for start in range(0, len(paths), GPU_DECODE_BATCH):
            idx = list(range(start, min(start + GPU_DECODE_BATCH, len(paths))))
            found = list(pool.map(_read_plain_jpeg, (paths[i] for i in idx)))
            jpeg_idx = [i for i, data in zip(idx, found) if data is not None]
            pil_idx = [i for i, data in zip(idx, found) if data is None]
            try:
                datas = [data for data in found if data is not None]
                decoded = tio.decode_jpeg(datas, mode=tio.ImageReadMode.RGB, device=device) if datas else []
            except RuntimeError:  # one bad stream fails the batch: let PIL find and name it
                decoded, jpeg_idx, pil_idx = [], [], idx
            # One resize and one device-to-host copy per group of equal-sized images (per-image copies sync each time).
            groups: dict[tuple, list[int]] = {}
            for k, img in enumerate(decoded):
                groups.setdefault(tuple(img.shape), []).append(k)
            for members in groups.values():
                for chunk in range(0, len(members), RESIZE_CHUNK):  # bounds the float copy on the device
                    part = members[chunk : chunk + RESIZE_CHUNK]
                    resized = _resize_batch([decoded[k] for k in part], size)
                    out[[jpeg_idx[k] for k in part]] = resized.permute(0, 2, 3, 1).cpu().numpy()
            list(pool.map(pil, pil_idx))
            if progress is not None:
                progress(idx[-1] + 1)
    return bad


def decoder_for(device: torch.device) -> str:
    """Which decoder fills a cache on this device: nvjpeg (GPU) or pil; their pixels differ slightly."""
    if device.type == "cuda" and os.environ.get("DATASLAYER_GPU_DECODE", "1") == "1":
        return "nvjpeg"
    return "pil"


def _decode(paths, size, out, device, progress) -> dict[int, str]:
    if decoder_for(device) == "nvjpeg":
        return _gpu_decode_into(paths, size, out, device, progress)
    return decode_into(paths, size, out, progress=progress)


def content_identity(paths: list[Path]) -> str:
    """Hash of every file's path, size and mtime_ns: a changed file (same name and size) changes it."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cache_stem(key: str, paths: list[Path], size: int, device: torch.device) -> str:
    """The on-disk cache's name: caller's key, image size, decoder, format version and file content identity.

    A cache decoded by another decoder, in another format or from changed files is never reused.
    """
    return f"{key}-{size}px-{decoder_for(device)}-v{CACHE_VERSION}-{content_identity(paths)}"


def _cache_paths(cache_dir: Path, stem: str) -> tuple[Path, Path]:
    base = cache_dir / stem
    return base.with_suffix(".npy"), base.with_suffix(".json")


def _reserve(path: Path) -> None:
    """Allocate the whole file now, so a full disk is ENOSPC here rather than SIGBUS inside the mapping later."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without it: the free-space check stands
            raise
    finally:
        os.close(fd)


def _load_or_decode(
    paths: list[Path], size: int, device: torch.device, key: str | None, cache_dir: Path | None, progress
) -> tuple[np.ndarray, dict[int, str], str]:
    """Decode paths to an (N, S, S, 3) uint8 array, reusing or writing the on-disk cache when `key` is given."""
    report = (lambda done: progress(done, len(paths))) if progress else None
    if key is None or cache_dir is None:
        out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
        return out, _decode(paths, size, out, device, report), "decoded"
    npy, meta = _cache_paths(Path(cache_dir), cache_stem(key, paths, size, device))
    cached = _read(npy, meta, paths, size, report)
    if cached is not None:
        return cached
    npy.parent.mkdir(parents=True, exist_ok=True)
    with _one_decoder(npy.parent):  # jobs sharing a GPU (or a disk) wait for the first to decode, then read its cache
        return _read(npy, meta, paths, size, report) or _write(npy, meta, paths, size, device, report)


@contextmanager
def _one_decoder(folder: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder across processes (no lock file; the kernel frees it if its holder dies)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(npy: Path, meta: Path, paths: list[Path], size: int, report):
    """The cached array, its bad files and "disk cache", or None when there is no complete cache of this shape."""
    if npy.exists() and meta.exists():
        info = json.loads(meta.read_text())
        arr = np.load(npy, mmap_mode="c")
        if arr.shape == (len(paths), size, size, 3):
            if report:
                report(len(paths))
            return arr, {int(k): v for k, v in info["bad"].items()}, "disk cache"
    return None


def _write(npy: Path, meta: Path, paths: list[Path], size: int, device: torch.device, report):
    """Decode into the on-disk cache (under _one_decoder) and return it as _read does, "decoded"."""
    shape = (len(paths), size, size, 3)
    needed = int(np.prod(shape))
    tmp = npy.with_name(f"{npy.stem}.{os.getpid()}.tmp.npy")
    meta_tmp = meta.with_name(meta.name + f".{os.getpid()}.tmp")
    try:
        ensure_free(npy.parent, needed)
        # Decode straight into a file-backed array, then rename: a crash never leaves a half cache.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _reserve(tmp)
        bad = _decode(paths, size, out, device, report)
        out.flush()
        del out
        os.replace(tmp, npy)
        meta_tmp.write_text(json.dumps({"bad": {str(k): v for k, v in bad.items()}, "count": len(paths), "size": size}))
        os.replace(meta_tmp, meta)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        full = disk_full(exc, npy.parent, needed) if isinstance(exc, OSError) else None
        if full is None:
            raise
        raise full from exc
    return np.load(npy, mmap_mode="c"), bad, "decoded"


def build_image_cache(
    paths: Sequence[str | os.PathLike],
    size: int,
    *,
    device: torch.device | str = "cpu",
    key: str | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageCache:
    """Decode (or load) the images and place them on the device, in pinned memory or on disk."""
    t0 = time.perf_counter()
    device = torch.device(device)
    arr, bad, source = _load_or_decode([Path(p) for p in paths], size, device, key, cache_dir, progress)
    nbytes = arr.nbytes
    if device.type == "cuda" and nbytes <= gpu_budget_bytes(device):
        images, location = torch.from_numpy(np.ascontiguousarray(arr)).to(device), "cuda"
    elif nbytes <= host_budget_bytes():
        images = torch.from_numpy(np.array(arr))  # a private in-memory copy
        location = "memory"
        if device.type == "cuda":
            images, location = images.pin_memory(), "pinned"
    else:
        images, location = torch.from_numpy(arr), "disk"  # memory-mapped, read per batch
    images = images.permute(0, 3, 1, 2)  # NHWC storage seen as NCHW = channels_last
    return ImageCache(images, bad, location, source, time.perf_counter() - t0)


def iterate_batches(
    cache: ImageCache,
    indices: np.ndarray,
    labels: torch.Tensor,
    batch_size: int,
    *,
    device: torch.device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 NCHW images, labels) batches on `device`, shuffled with `generator` when asked."""
    idx = torch.as_tensor(indices, dtype=torch.long)
    if shuffle:
        idx = idx[torch.randperm(len(idx), generator=generator)]
    on_device = cache.images.device.type == device.type
    # Indices and labels live where the images are: both move to the device once (cache there), or
    # each batch's labels travel with its images (cache on the host). A plain copy from pageable
    # memory waits for the GPU, so every host-to-GPU copy here goes through pinned memory.
    if on_device:
        idx, labels = _to_device(idx, device), _to_device(labels, device)
    else:
        labels = labels.to(cache.images.device)
    stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        b = idx[start : start + batch_size]
        images, batch_labels = cache.images.index_select(0, b), labels.index_select(0, b)
        if not on_device:
            images, batch_labels = _to_device(images, device), _to_device(batch_labels, device)
        yield images, batch_labels


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; from the host to a GPU through pinned memory, without waiting for the GPU."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
