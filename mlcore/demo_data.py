"""Synthetic fall / non-fall scenes in the competition's directory layout.

The competition images (people filmed indoors, ``fall`` or ``non_fall``) cannot be
shipped, so the demo, the tests and the benchmark use this generator.  Each image is
an indoor scene drawn with numpy and PIL: a room (wall and floor colours changing
along it, a floor line at varying height, windows, doors, rugs, sofas, empty chairs)
and one outlined stick-and-ellipse person whose skin, hair and clothes are fixed per
subject.  ``non_fall`` people stand, walk or sit on a chair or box; ``fall`` people lie
on the floor, roughly horizontal, at varied angles, places, postures and foreshortening.

It is learnable but not trivial because only the body's shape and orientation carry
the label: a clip is one action in one room filmed by a camera panning after the
person (so frames form a sequence), the fall and non-fall clip of a subject with the
same index share their room, light (exposure, white balance, gradient) changes per
frame independently of the label, and sofas, rugs and boxes put horizontal shapes
near the floor in both classes.  Camera shake and zoom, blur, noise and JPEG
compression are added per frame.  Layout written by :func:`generate_demo_dataset`::

    OUT/train/subject-01/{fall,non_fall}/clip-00/frame-000.jpg
    OUT/test/img_0001.jpg            (unseen people, both classes)
    OUT/test_labels.csv              (id,label; id is the file name, as in submissions; 1 = fall)

Seeds derive from (seed, role, subject, class, clip, frame): reruns give the same bytes.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mlcore.data import CLASSES

# The order classes are drawn in (fall first): kept, so the same seed still writes the same bytes.
_DRAW_ORDER = tuple(reversed(CLASSES))
_MARGIN = 0.1  # canvas border (fraction of the longer side) so shake never shows an empty corner
# Trousers come in few colours (denim, black, grey, khaki, brown), unlike shirts.
_PANTS = ((40, 60, 110), (60, 85, 140), (30, 30, 35), (90, 90, 95), (160, 145, 110), (90, 65, 45))
_Style = dict[str, tuple[int, int, int]]
_Rng = np.random.Generator


def _colour(rng: _Rng, lo: int, hi: int) -> tuple[int, int, int]:
    """Draw a random RGB colour with channels in [lo, hi)."""
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _tinted(rng: _Rng, lo: int, hi: int, tint: int) -> tuple[int, int, int]:
    """Draw a muted colour (a grey level plus a small tint), like painted walls and floors."""
    grey, cast = rng.uniform(lo, hi), rng.uniform(-tint, tint, 3)
    return tuple(int(v) for v in np.clip(grey + cast, 0, 255))


def _subject_style(seed: int, subject: int) -> _Style:
    """Draw the skin, hair and clothes colours that identify one subject."""
    rng = np.random.default_rng([seed, 1, subject])
    tone = rng.uniform(0.35, 1.0)
    return {
        "skin": (int(90 + 150 * tone), int(60 + 130 * tone), int(40 + 110 * tone)),
        "hair": _colour(rng, 10, 120),
        "shirt": _colour(rng, 20, 236),
        "pants": _PANTS[int(rng.integers(len(_PANTS)))],
        "shoes": _colour(rng, 5, 60),
    }


def _direction(deg: float) -> np.ndarray:
    """Return the unit vector for an angle in degrees, 0 = up and 90 = forward (y up)."""
    return np.array([math.sin(math.radians(deg)), math.cos(math.radians(deg))])


def _skeleton(pose: str, p: np.ndarray, t: float, variant: int) -> dict[str, np.ndarray]:
    """Return joints in body units (height 1, pelvis at origin, y up) for a pose at frame t."""
    wob = 4.0 * math.sin(1.3 * t + 6 * p[0])  # limbs move a little from frame to frame
    torso, thighs, shins = 0.0, [180.0, 180.0], [180.0, 180.0]
    if pose == "stand":
        thighs = [178 - 4 * p[1], 182 + 4 * p[1]]
        arms, fores = [170 - 20 * p[2] + wob, 190 + 10 * p[3] - wob], [160 - 40 * p[2], 200]
    elif pose == "walk":
        swing = (18 + 10 * p[1]) * math.sin(0.9 * t + 6 * p[2])
        thighs, shins = [180 - swing, 180 + swing], [200 - swing, 200 + swing]
        arms, fores, torso = [180 + swing, 180 - swing], [160 + swing, 160 - swing], 5 * p[3]
    elif pose == "sit":
        torso = -12 * p[1] + wob / 2
        thighs, shins = [95 - 15 * p[2], 85 - 15 * p[2]], [180 - 10 * p[3], 190 - 10 * p[3]]
        arms, fores = [165 + wob, 175], [110 + 20 * p[0], 100]
    else:  # lying, drawn upright in the body frame and rotated onto the floor later
        kind, torso = variant % 4, 8 * (p[1] - 0.5) + wob / 2
        if kind == 1:  # recovery position: one knee up
            thighs, shins = [180, 140 - 20 * p[2]], [180, 200]
        elif kind == 2:  # curled up
            thighs, shins = [130 - 20 * p[2], 120 - 20 * p[2]], [200, 210]
        else:
            thighs = [185 - 10 * p[2], 175 + 10 * p[2]]
        a0, a1 = [[180, 180], [20, 340], [100, 260], [0, 160]][variant // 4]
        arms, fores = [a0 + wob, a1 - wob], [a0 + 15, a1 - 15]
    up = _direction(torso)
    side, neck = np.array([up[1], -up[0]]), 0.32 * up
    j = {"pelvis": np.zeros(2), "neck": neck, "head": neck + 0.11 * up}
    for i, s in enumerate((1.0, -1.0)):
        hip, shoulder = s * 0.045 * side, neck - 0.03 * up + s * 0.09 * side
        knee = hip + 0.25 * _direction(thighs[i])
        ankle, elbow = knee + 0.24 * _direction(shins[i]), shoulder + 0.16 * _direction(arms[i])
        j |= {
            f"hip{i}": hip,
            f"knee{i}": knee,
            f"ankle{i}": ankle,
            f"toe{i}": ankle + 0.06 * _direction(90),
            f"shoulder{i}": shoulder,
            f"elbow{i}": elbow,
            f"hand{i}": elbow + 0.15 * _direction(fores[i]),
        }
    return j


def _project(
    joints: dict, origin: np.ndarray, scale: float, angle: float, squash: float, mirror: bool
) -> dict[str, np.ndarray]:
    """Map body-frame joints to pixels: mirror, foreshorten along the body, rotate, scale, shift."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = {}
    for k, q in joints.items():
        x, y = (-q[0] if mirror else q[0]), q[1] * squash
        out[k] = origin + scale * np.array([c * x - s * y, -(s * x + c * y)])
    return out


def _limb(draw: ImageDraw.ImageDraw, pts: list[np.ndarray], width: float, fill: tuple) -> None:
    """Draw a thick polyline with rounded joints."""
    w = max(1, int(round(width)))
    draw.line([tuple(q) for q in pts], fill=fill, width=w)
    for q in pts:
        draw.ellipse([q[0] - w / 2, q[1] - w / 2, q[0] + w / 2, q[1] + w / 2], fill=fill)


def _draw_person(draw: ImageDraw.ImageDraw, P: dict, style: _Style, scale: float) -> None:
    """Draw the figure from projected joints: outlined limbs, torso, head and hair."""
    r, h = 0.075 * scale, P["head"]
    # Pass 0 paints a dark silhouette a little wider than pass 1, an outline whose contrast
    # does not depend on the subject's clothes or the wall colour.
    for extra in (0.05 * scale, 0.0):

        def col(key: str, f: float = 1.0, dark: bool = extra > 0) -> tuple[int, int, int]:
            return tuple(int(v * (0.25 if dark else f)) for v in style[key])

        for i, f in ((1, 0.75), (0, 1.0)):  # far side first and darker
            if i == 0:
                torso = [tuple(P[k]) for k in ("shoulder0", "shoulder1", "hip1", "hip0")]
                draw.polygon(torso, fill=col("shirt"))
                _limb(draw, [P["neck"], P["pelvis"]], 0.17 * scale + extra, col("shirt"))
                _limb(draw, [P["hip0"], P["hip1"]], 0.1 * scale + extra, col("pants"))
            _limb(draw, [P[f"hip{i}"], P[f"knee{i}"], P[f"ankle{i}"]], 0.09 * scale + extra, col("pants", f))
            _limb(draw, [P[f"ankle{i}"], P[f"toe{i}"]], 0.045 * scale + extra, col("shoes"))
            _limb(draw, [P[f"shoulder{i}"], P[f"elbow{i}"]], 0.07 * scale + extra, col("shirt", f))
            _limb(draw, [P[f"elbow{i}"], P[f"hand{i}"]], 0.06 * scale + extra, col("skin", f))
        q = r + extra / 2
        draw.ellipse([h[0] - q, h[1] - q, h[0] + q, h[1] + q], fill=col("skin"))
    v = h - P["neck"]  # hair covers the half of the head that points away from the neck
    top = math.degrees(math.atan2(v[1], v[0]))
    hx, hy = h + 0.15 * r * v / (np.linalg.norm(v) + 1e-9)
    draw.chord([hx - r, hy - r, hx + r, hy + r], top - 85, top + 85, fill=style["hair"])


def _draw_chair(draw: ImageDraw.ImageDraw, foot: np.ndarray, size: float, col: tuple, box: bool) -> None:
    """Draw a chair (or a box) whose seat is 0.27 * size above the foot point."""
    (x, y), seat, t = foot, 0.27 * size, max(1, int(size * 0.03))
    if box:
        draw.rectangle([x - 0.13 * size, y - seat, x + 0.13 * size, y], fill=col)
        return
    draw.rectangle([x - 0.13 * size, y - seat - t, x + 0.13 * size, y - seat + t], fill=col)
    for lx, top, lw in ((x - 0.12 * size, y - seat, t), (x + 0.12 * size, y - seat, t)):
        draw.line([lx, top, lx, y], fill=col, width=lw)
    draw.line([x - 0.12 * size, y - seat, x - 0.14 * size, y - 0.62 * size], fill=col, width=2 * t)


def _draw_room(draw: ImageDraw.ImageDraw, rng: _Rng, w: int, h: int, floor_y: float) -> None:
    """Draw walls, floor and furniture, including fall-like horizontal distractors."""
    # Walls and floor change colour along the room (corners, alcoves, another floor covering).
    cuts = np.sort(np.concatenate([[0.0, w], rng.uniform(0, w, int(rng.integers(1, 4)))]))
    for a, b in zip(cuts[:-1], cuts[1:]):
        draw.rectangle([a, 0, b, floor_y], fill=_tinted(rng, 120, 240, 30))
    for a, b in zip(cuts[:-1], cuts[1:]):
        if a == 0 or rng.random() < 0.5:
            floor = _tinted(rng, 50, 170, 40)
        draw.rectangle([a, floor_y, b, h], fill=floor)
    if rng.random() < 0.5:  # a skirting board marks the floor edge
        draw.line([0, floor_y, w, floor_y], fill=_colour(rng, 20, 250), width=max(1, h // 60))
    for _ in range(rng.integers(1, 2 + int(2 * w / h))):  # about one item per camera view
        kind, x = rng.integers(0, 5), rng.uniform(0, w)
        fw, fh, col = rng.uniform(0.13, 0.4) * h, rng.uniform(0.1, 0.35) * h, _colour(rng, 30, 230)
        if kind == 0:  # window
            y0 = rng.uniform(0.05, 0.3) * floor_y
            box = [x, y0, x + fw, min(y0 + fh, floor_y - 4)]
            draw.rectangle(box, fill=_colour(rng, 170, 255), outline=col, width=max(2, h // 60))
            draw.line([x + fw / 2, box[1], x + fw / 2, box[3]], fill=col, width=max(1, h // 90))
        elif kind == 1:  # door
            draw.rectangle([x, floor_y - 0.55 * h, x + 0.16 * h, floor_y], fill=col)
        elif kind == 2:  # rug
            y = rng.uniform(floor_y, h)
            draw.ellipse([x - fw, y - fh / 4, x + fw, y + fh / 4], fill=col)
        elif kind == 3:  # sofa or bed
            y = rng.uniform(floor_y, floor_y + 0.3 * (h - floor_y))
            draw.rectangle([x, y - fh * 0.6, x + 1.6 * fw, y], fill=col)
            draw.rectangle([x, y - fh, x + 1.6 * fw, y - fh * 0.6], fill=tuple(v // 2 + 40 for v in col))
        else:  # empty chair or box, like those under sitting people
            _draw_chair(draw, np.array([x, rng.uniform(floor_y, h)]), 0.35 * h, col, bool(rng.random() < 0.5))


def render_scene(
    label: str,
    style: _Style,
    room_seed: list[int],
    clip_seed: list[int],
    frame: int,
    image_size: tuple[int, int],
    *,
    background: bool = True,
) -> Image.Image:
    """Render one frame of a clip in a room; background=False draws only the person, on black."""
    room, actor = np.random.default_rng(room_seed), np.random.default_rng([*clip_seed, 500])
    rng = np.random.default_rng([*clip_seed, 1000 + frame])  # per-frame motion, camera and light
    w, h = image_size
    m = int(math.ceil(_MARGIN * max(w, h)))
    room_w = 3 * w  # the room is three views wide; the camera pans to follow the person
    canvas = Image.new("RGB", (room_w + 2 * m, h + 2 * m))
    draw = ImageDraw.Draw(canvas)
    floor_y = m + room.uniform(0.3, 0.6) * h
    if background:
        _draw_room(draw, room, room_w + 2 * m, h + 2 * m, floor_y)
    moving = label == "non_fall" and actor.random() < 0.5
    pose = "lie" if label == "fall" else ("walk" if moving else actor.choice(["stand", "sit"]))
    speed = actor.uniform(0.04, 0.1) if moving else 0.015  # fraction of the room per frame
    p = np.clip(actor.random(4) + rng.normal(0, 0.08, 4), 0, 1)
    variant = int(actor.integers(16))  # discrete posture choices stay fixed for the whole clip
    depth = float(np.clip(actor.random() + actor.uniform(-0.04, 0.04) * frame, 0, 1))
    mirror = bool(actor.random() < 0.5)
    height = (0.5 + 0.3 * depth) * h  # nearer people are lower in the frame and bigger
    ground = floor_y + (0.15 + 0.75 * depth) * (h + m - floor_y)
    u = (actor.random() + actor.choice([-1, 1]) * speed * frame) % 2  # bounce off the walls
    x = m + (0.1 + 0.8 * min(u, 2 - u)) * room_w + rng.normal(0, 0.01) * w
    left = m + float(np.clip(x - m - w / 2 + rng.normal(0, 0.25 * w), 0, room_w - w))
    if label == "fall":
        angle = (90 + actor.uniform(-15, 15) + rng.normal(0, 2)) * actor.choice([-1, 1])
        squash = actor.uniform(0.8, 1.0)  # lying along the camera axis shortens the body
        mirror = angle < 0  # on the back or side: knees bend away from the floor, not into it
        origin = np.array([x, ground - 0.06 * height])
    else:
        angle, squash = actor.uniform(-6, 6), 1.0
        ground = max(ground, m + 1.02 * height)
        origin = np.array([x, ground - (0.29 if pose == "sit" else 0.52) * height])
    P = _project(
        _skeleton(pose, p, float(frame), variant),
        origin + rng.normal(0, 0.004 * h, 2),
        height,
        angle + rng.normal(0, 1.5),
        squash,
        mirror,
    )
    # Shift the figure into view (a person cut by the border is another problem); the inset is
    # what the largest zoom and shake below can crop away.
    pts, pad, inset = np.stack(list(P.values())), 0.08 * height, 0.07 * np.array([w, h]) + 0.04 * w
    lo, hi = pts.min(0) - pad - (left, m) - inset, pts.max(0) + pad - (left, m) + inset
    shift = np.array([min(0.0, w - hi[0]) - min(0.0, lo[0]), min(0.0, h - hi[1]) - min(0.0, lo[1])])
    P = {k: v + shift for k, v in P.items()}
    if pose == "sit":
        seat = np.array([x + (0.05 if mirror else -0.05) * height, ground]) + shift
        chair_col, box = _colour(actor, 30, 200), bool(actor.random() < 0.3)
        if background:
            _draw_chair(draw, seat, height, chair_col, box)
    tint = actor.integers(-20, 21, 3)  # clothes look a little different from clip to clip
    _draw_person(
        draw, P, {k: tuple(int(np.clip(v + t, 0, 255)) for v, t in zip(c, tint)) for k, c in style.items()}, height
    )
    if not background:
        return canvas.crop((round(left), m, round(left) + w, m + h))
    # Camera shake and zoom: one affine warp about the view centre, bounded to stay in the margin.
    rot = math.radians(float(np.clip(rng.normal(0, 1.5), -4, 4)))
    dx, dy = np.clip(rng.normal(0, 0.025 * w, 2), -0.04 * w, 0.04 * w)
    zoom = rng.uniform(1.0, 1.15)
    c, s, cx, cy = math.cos(rot) / zoom, math.sin(rot) / zoom, w / 2, h / 2
    coeffs = (c, -s, left + cx + dx - c * cx + s * cy, s, c, m + cy + dy - s * cx - c * cy)
    img = canvas.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2) * w / 320))
    # Light changes per frame (auto exposure, white balance, daylight) independently of the
    # label: the main nuisance a model has to learn to ignore.
    gain = (rng.uniform(0.6, 1.2) * rng.uniform(0.85, 1.15, 3)).astype(np.float32)
    a, f32 = rng.uniform(0, 2 * math.pi), np.float32
    ramp = (
        f32(math.cos(a)) * np.linspace(-1, 1, w, dtype=f32)[None, :]
        + f32(math.sin(a)) * np.linspace(-1, 1, h, dtype=f32)[:, None]
    )
    arr = np.asarray(img, dtype=f32) * (1 + f32(rng.uniform(0, 0.35)) * ramp)[:, :, None] * gain
    arr += rng.standard_normal((h, w, 3), dtype=f32) * f32(rng.uniform(2, 8))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _save(img: Image.Image, path: Path, key: list[int]) -> None:
    """Save as JPEG at a quality drawn from key, like frames from differing cameras."""
    img.save(path, format="JPEG", quality=int(np.random.default_rng(key).integers(60, 92)))


def _is_int(value: object, minimum: int) -> bool:
    """Tell whether value is a real int (not a bool) >= minimum."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check(image_size: object, seed: object, **counts: tuple[object, int]) -> tuple[int, int]:
    """Raise ValueError naming the first bad argument; return image_size as (width, height)."""
    for name, (value, minimum) in {**counts, "seed": (seed, 0)}.items():
        if not _is_int(value, minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if not (
        isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(_is_int(v, 16) for v in image_size)
    ):  # smaller cannot hold a visible person
        raise ValueError(f"image_size must be a (width, height) pair of integers >= 16, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def generate_demo_dataset(
    out: str | Path,
    *,
    subjects: int = 6,
    images_per_class: int = 40,
    test_images: int = 40,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
    frames_per_clip: int = 8,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the dataset; return {"train": n, "test": n, "subjects": [...], "per_class": {...}, "path": str}."""
    size, out = (
        _check(
            image_size,
            seed,
            subjects=(subjects, 2),
            images_per_class=(images_per_class, 1),
            test_images=(test_images, 1),
            frames_per_clip=(frames_per_clip, 1),
        ),
        Path(out),
    )
    for sub in (out / "train", out / "test"):  # stale files would silently mix into the dataset
        if sub.is_dir() and any(sub.iterdir()) and not overwrite:
            raise ValueError(f"refusing to write into non-empty {sub} (pass overwrite=True)")
    if overwrite:
        shutil.rmtree(out / "train", ignore_errors=True)
        shutil.rmtree(out / "test", ignore_errors=True)
        (out / "test_labels.csv").unlink(missing_ok=True)
    names = [f"subject-{s + 1:0{max(2, len(str(subjects)))}d}" for s in range(subjects)]
    total, done = subjects * 2 * images_per_class + test_images, 0
    clip_digits = max(2, len(str((images_per_class - 1) // frames_per_clip)))  # names sort in order

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for s, name in enumerate(names):
        style = _subject_style(seed, s)
        for ci, label in enumerate(_DRAW_ORDER):
            for k in range(images_per_class):
                clip, frame = divmod(k, frames_per_clip)
                folder = out / "train" / name / label / f"clip-{clip:0{clip_digits}d}"
                folder.mkdir(parents=True, exist_ok=True)
                key = [seed, 2, s, ci, clip]
                # The fall and non_fall clip with one index share a room, so rooms carry no label.
                img = render_scene(label, style, [seed, 6, s, clip], key, frame, size)
                _save(img, folder / f"frame-{frame:03d}.jpg", [*key, frame, 7])
                tick()
    # Test images show unseen people; labels alternate before shuffling so both classes appear.
    (out / "test").mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 3]).permutation(test_images)
    width, rows = max(4, len(str(test_images))), []
    for i in range(test_images):
        label, name = _DRAW_ORDER[int(order[i]) % 2], f"img_{i + 1:0{width}d}.jpg"
        img = render_scene(
            label, _subject_style(seed, subjects + i), [seed, 7, i], [seed, 4, i], int(order[i]) % frames_per_clip, size
        )
        _save(img, out / "test" / name, [seed, 4, i, 7])
        rows.append((name, int(label == "fall")))
        tick()
    with open(out / "test_labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(rows)
    return {
        "train": subjects * 2 * images_per_class,
        "test": test_images,
        "subjects": names,
        "per_class": {c: subjects * images_per_class for c in _DRAW_ORDER},
        "path": str(out),
    }


def write_jpeg_frames(
    out_dir: str | Path, n: int, *, image_size: tuple[int, int] = (640, 480), seed: int = 0
) -> list[Path]:
    """Write n synthetic scene JPEGs (mixed classes) flat into out_dir; return their paths."""
    size, out_dir = _check(image_size, seed, n=(n, 0)), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = render_scene(
            _DRAW_ORDER[i % 2], _subject_style(seed, 10_000 + i // 8), [seed, 8, i // 16], [seed, 5, i], i % 8, size
        )
        paths.append(out_dir / f"frame-{i:05d}.jpg")
        _save(img, paths[-1], [seed, 5, i, 7])
    return paths
