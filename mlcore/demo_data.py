"""Synthetic fall / non-fall scenes in the competition's directory layout.

The real competition images (people filmed indoors, labelled ``fall`` or
``non_fall``) cannot be shipped, so the demo, the tests and the benchmark use
this generator instead.  Every image is a small indoor scene drawn with numpy
and PIL: a room (wall and floor colours, a floor line at varying height,
sometimes a window, door, rug, sofa or empty chair), global lighting (gain,
colour cast, a gradient) and one stick-and-ellipse person whose skin, hair and
clothes are fixed per subject.  ``non_fall`` people stand, walk or sit on a
chair; ``fall`` people lie near the floor at varied angles, positions and
foreshortening.  Camera shake, sensor noise, blur and JPEG compression are
added per frame, and frames of a clip are a short sequence of one action in
one room.  Sofas, rugs and empty chairs give the background horizontal shapes
near the floor in both classes, so a model has to look at the person.

Layout written by :func:`generate_demo_dataset`::

    OUT/train/subject-01/fall/clip-00/frame-000.jpg
    OUT/train/subject-01/non_fall/clip-00/frame-000.jpg
    OUT/test/img_0001.jpg
    OUT/test_labels.csv            (id,label with id = file stem, 1 = fall)

Every image draws from its own seed derived from (seed, role, subject, class,
clip, frame), so output bytes do not depend on generation order.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("fall", "non_fall")
ROOMS_PER_SUBJECT = 3
_SHAKE_MARGIN = 0.08  # canvas border (fraction of width) so shake never shows an empty corner
_Style = dict[str, tuple[int, int, int]]


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    """Draw a random RGB colour with channels in [lo, hi)."""
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _tinted(rng: np.random.Generator, lo: int, hi: int, tint: int) -> tuple[int, int, int]:
    """Draw a muted colour (a grey level plus a small tint), like painted walls and floors."""
    grey, cast = rng.uniform(lo, hi), rng.uniform(-tint, tint, 3)
    return tuple(int(v) for v in np.clip(grey + cast, 0, 255))


def _subject_style(seed: int, subject: int) -> _Style:
    """Draw the skin, hair and clothes colours that identify one subject."""
    rng = np.random.default_rng([seed, 1, subject])
    tone = rng.uniform(0.35, 1.0)
    return {"skin": (int(90 + 150 * tone), int(60 + 130 * tone), int(40 + 110 * tone)),
            "hair": _colour(rng, 10, 120), "shirt": _colour(rng, 20, 236),
            "pants": _colour(rng, 15, 160), "shoes": _colour(rng, 5, 60)}


def _direction(deg: float) -> np.ndarray:
    """Return the unit vector for an angle in degrees, 0 = up and 90 = forward (y up)."""
    rad = math.radians(deg)
    return np.array([math.sin(rad), math.cos(rad)])


def _skeleton(pose: str, p: np.ndarray, t: float) -> dict[str, np.ndarray]:
    """Return joint positions in body units (height 1, pelvis at origin, y up) for a pose at time t."""
    wob = 4.0 * math.sin(1.3 * t + 6 * p[0])  # small per-frame limb motion so frames form a sequence
    torso, thighs, shins, arms, fores = 0.0, [180.0, 180.0], [180.0, 180.0], [180.0, 180.0], [180.0, 180.0]
    thigh_len = 0.25
    if pose == "stand":
        thighs, shins = [178 - 4 * p[1], 182 + 4 * p[1]], [180, 180]
        arms, fores = [170 - 20 * p[2] + wob, 190 + 10 * p[3] - wob], [160 - 40 * p[2], 200]
    elif pose == "walk":
        swing = (18 + 10 * p[1]) * math.sin(0.9 * t + 6 * p[2])
        thighs, shins = [180 - swing, 180 + swing], [180 - swing + 20, 180 + swing + 20]
        arms, fores = [180 + swing, 180 - swing], [160 + swing, 160 - swing]
        torso = 5 * p[3]
    elif pose == "sit":
        torso = -12 * p[1] + wob / 2
        thighs, shins = [95 - 15 * p[2], 85 - 15 * p[2]], [180 - 10 * p[3], 190 - 10 * p[3]]
        arms, fores = [165 + wob, 175], [110 + 20 * p[0], 100]
    else:  # lying: body frame is a recognisable lying posture, rotated to the floor later
        kind = int(p[0] * 4)
        torso = 8 * (p[1] - 0.5) + wob / 2
        if kind == 1:  # recovery position: one knee up
            thighs, shins = [180, 140 - 20 * p[2]], [180, 200]
        elif kind == 2:  # curled up
            thighs, shins = [130 - 20 * p[2], 120 - 20 * p[2]], [200, 210]
        else:
            thighs = [185 - 10 * p[2], 175 + 10 * p[2]]
        arms = [[180, 180], [20, 340], [100, 260], [0, 160]][int(p[3] * 4)]
        arms, fores = [arms[0] + wob, arms[1] - wob], [arms[0] + 15, arms[1] - 15]
    up = _direction(torso)
    side = np.array([up[1], -up[0]])
    neck = 0.32 * up
    j = {"pelvis": np.zeros(2), "neck": neck, "head": neck + 0.11 * up}
    for i, s in enumerate((1.0, -1.0)):
        hip = s * 0.045 * side
        knee = hip + thigh_len * _direction(thighs[i])
        ankle = knee + 0.24 * _direction(shins[i])
        shoulder = neck - 0.03 * up + s * 0.09 * side
        elbow = shoulder + 0.16 * _direction(arms[i])
        j |= {f"hip{i}": hip, f"knee{i}": knee, f"ankle{i}": ankle,
              f"toe{i}": ankle + 0.06 * _direction(90), f"shoulder{i}": shoulder,
              f"elbow{i}": elbow, f"hand{i}": elbow + 0.15 * _direction(fores[i])}
    return j


def _limb(draw: ImageDraw.ImageDraw, pts: list[np.ndarray], width: float, fill: tuple) -> None:
    """Draw a thick polyline with rounded joints."""
    w = max(1, int(round(width)))
    draw.line([tuple(q) for q in pts], fill=fill, width=w)
    for q in pts:
        draw.ellipse([q[0] - w / 2, q[1] - w / 2, q[0] + w / 2, q[1] + w / 2], fill=fill)


def _draw_person(draw: ImageDraw.ImageDraw, joints: dict, style: _Style, *, origin: np.ndarray,
                 scale: float, angle: float, squash: float, mirror: bool) -> None:
    """Project body-frame joints to the image (rotate, foreshorten, mirror) and draw the figure."""
    rot = math.radians(angle)
    c, s = math.cos(rot), math.sin(rot)

    def px(q: np.ndarray) -> np.ndarray:
        x, y = (-q[0] if mirror else q[0]), q[1] * squash
        return origin + scale * np.array([c * x - s * y, -(s * x + c * y)])

    P = {k: px(v) for k, v in joints.items()}
    r, h = 0.075 * scale, P["head"]
    # Pass 0 paints a dark silhouette a little wider than pass 1, so the figure has an outline
    # whose contrast does not depend on the subject's clothes or the wall colour.
    for extra in (0.03 * scale, 0.0):
        def col(key: str, f: float = 1.0) -> tuple[int, int, int]:
            return tuple(int(v * (0.25 if extra else f)) for v in style[key])

        for i, f in ((1, 0.75), (0, 1.0)):  # far side first and darker
            if i == 0:
                torso = [P["shoulder0"], P["shoulder1"], P["hip1"], P["hip0"]]
                draw.polygon([tuple(q) for q in torso], fill=col("shirt"))
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


def _draw_room(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, floor_y: float) -> None:
    """Draw walls, floor and background furniture, including fall-like horizontal distractors."""
    draw.rectangle([0, 0, w, floor_y], fill=_tinted(rng, 120, 240, 30))
    draw.rectangle([0, floor_y, w, h], fill=_tinted(rng, 50, 170, 40))
    if rng.random() < 0.5:  # skirting board line marks the floor edge like real rooms
        draw.line([0, floor_y, w, floor_y], fill=_colour(rng, 20, 250), width=max(1, h // 60))
    for _ in range(rng.integers(0, 3)):
        kind, x = rng.integers(0, 5), rng.uniform(0, w)
        fw, fh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.35) * h
        col = _colour(rng, 30, 230)
        if kind == 0:  # window
            y0 = rng.uniform(0.05, 0.3) * floor_y
            box = [x, y0, x + fw, min(y0 + fh, floor_y - 4)]
            draw.rectangle(box, fill=_colour(rng, 170, 255), outline=col, width=max(2, w // 80))
            draw.line([(box[0] + box[2]) / 2, box[1], (box[0] + box[2]) / 2, box[3]], fill=col, width=max(1, w // 120))
        elif kind == 1:  # door
            draw.rectangle([x, floor_y - 0.55 * h, x + 0.12 * w, floor_y], fill=col)
        elif kind == 2:  # rug
            y = rng.uniform(floor_y, h)
            draw.ellipse([x - fw, y - fh / 4, x + fw, y + fh / 4], fill=col)
        elif kind == 3:  # sofa or bed
            y = rng.uniform(floor_y, floor_y + 0.3 * (h - floor_y))
            draw.rectangle([x, y - fh * 0.6, x + 1.6 * fw, y], fill=col)
            draw.rectangle([x, y - fh, x + 1.6 * fw, y - fh * 0.6], fill=tuple(v // 2 + 40 for v in col))
        else:  # empty chair or box, also seen under sitting people
            y = rng.uniform(floor_y, h)
            _draw_chair(draw, np.array([x, y]), 0.35 * h, col, bool(rng.random() < 0.5))


def _draw_chair(draw: ImageDraw.ImageDraw, foot: np.ndarray, size: float, col: tuple, box: bool) -> None:
    """Draw a chair (or a box) whose seat is at 0.27 * size above the foot point."""
    x, y, seat = foot[0], foot[1], 0.27 * size
    if box:
        draw.rectangle([x - 0.13 * size, y - seat, x + 0.13 * size, y], fill=col)
        return
    t = max(1, int(size * 0.03))
    draw.rectangle([x - 0.13 * size, y - seat - t, x + 0.13 * size, y - seat + t], fill=col)
    for lx in (x - 0.12 * size, x + 0.12 * size):
        draw.line([lx, y - seat, lx, y], fill=col, width=t)
    draw.line([x - 0.12 * size, y - seat, x - 0.14 * size, y - 0.62 * size], fill=col, width=2 * t)


def render_scene(label: str, style: _Style, room_seed: list[int], clip_rng_seed: list[int], frame: int,
                 image_size: tuple[int, int]) -> Image.Image:
    """Render one frame: the room seed fixes the room, the clip seed action and light, the frame motion."""
    room = np.random.default_rng(room_seed)
    clip = np.random.default_rng(clip_rng_seed)
    rng = np.random.default_rng([*clip_rng_seed, 1000 + frame])
    w, h = image_size
    m = int(math.ceil(_SHAKE_MARGIN * w))
    cw, ch = w + 2 * m, h + 2 * m
    canvas = Image.new("RGB", (cw, ch))
    draw = ImageDraw.Draw(canvas)
    floor_y = m + room.uniform(0.3, 0.6) * h
    _draw_room(draw, room, cw, ch, floor_y)
    # The actor draws clip-level choices (action, start, speed); rng adds per-frame jitter.
    actor = np.random.default_rng([*clip_rng_seed, 500])
    moving = label == "non_fall" and actor.random() < 0.5
    pose = "lie" if label == "fall" else ("walk" if moving else actor.choice(["stand", "sit"]))
    speed = actor.uniform(0.04, 0.1) if moving else 0.015  # fraction of the width per frame
    p = np.clip(actor.random(4) + rng.normal(0, 0.08, 4), 0, 0.999)
    depth = float(np.clip(actor.random() + actor.uniform(-0.04, 0.04) * frame, 0, 1))
    mirror = bool(actor.random() < 0.5)
    height = (0.5 + 0.3 * depth) * h  # nearer people are lower in the frame and bigger
    ground = floor_y + (0.15 + 0.75 * depth) * (h + m - floor_y)
    u = (actor.random() + actor.choice([-1, 1]) * speed * frame) % 2  # bounce off the walls
    x = m + (0.15 + 0.7 * min(u, 2 - u)) * w + rng.normal(0, 0.01) * w
    if label == "fall":
        angle = (90 + actor.uniform(-25, 25) + rng.normal(0, 3)) * actor.choice([-1, 1])
        squash = actor.uniform(0.7, 1.0)  # lying along the camera axis shortens the body
        # Keep the whole body in frame: a fall cut by the border is not what the camera sees.
        tilt = math.radians(abs(abs(angle) - 90))
        half_w = 0.5 * height * squash * math.cos(tilt) + 0.1 * height
        half_h = 0.5 * height * squash * math.sin(tilt) + 0.1 * height
        x = min(max(x, m + half_w), m + w - half_w)
        origin = np.array([x, min(ground - 0.06 * height, m + h - half_h)])
    else:
        angle, squash = actor.uniform(-6, 6), 1.0
        ground = max(ground, m + 1.02 * height)
        origin = np.array([x, ground - (0.29 if pose == "sit" else 0.52) * height])
        if pose == "sit":
            _draw_chair(draw, np.array([x + (0.05 if mirror else -0.05) * height, ground]), height,
                        _colour(actor, 30, 200), bool(actor.random() < 0.3))
    joints = _skeleton(pose, p, float(frame))
    _draw_person(draw, joints, style, origin=origin + rng.normal(0, 0.004 * h, 2), scale=height,
                 angle=angle + rng.normal(0, 1.5), squash=squash, mirror=mirror)
    # Camera shake: one affine warp rotates about the centre, shifts, and crops the margin.
    rot, dx, dy = math.radians(rng.normal(0, 1.5)), *rng.normal(0, 0.012 * w, 2)
    c, s = math.cos(rot), math.sin(rot)
    cx, cy = w / 2, h / 2
    coeffs = (c, -s, m + cx + dx - c * cx + s * cy, s, c, m + cy + dy - s * cx - c * cy)
    img = canvas.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2) * w / 320))
    arr = np.asarray(img, dtype=np.float32)
    # Lighting belongs to the room, shared by both classes, so it cannot give the label away.
    gain = room.uniform(0.6, 1.2) * room.uniform(0.85, 1.15, 3) * rng.uniform(0.95, 1.05)
    a = room.uniform(0, 2 * math.pi)
    ramp = np.cos(a) * np.linspace(-1, 1, w)[None, :] + np.sin(a) * np.linspace(-1, 1, h)[:, None]
    light = (1 + room.uniform(0, 0.35) * ramp)[:, :, None] * gain.astype(np.float32)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2, 8))
    return Image.fromarray(np.clip(arr * light + noise, 0, 255).astype(np.uint8))


def _save(img: Image.Image, path: Path, rng: np.random.Generator) -> None:
    """Save as JPEG at a random quality, like frames from differing cameras."""
    img.save(path, format="JPEG", quality=int(rng.integers(60, 92)))


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    """Raise ValueError naming the argument unless it is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_size(image_size: object) -> tuple[int, int]:
    """Validate a (width, height) pair, large enough to draw a person in."""
    if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 16 for v in image_size)):
        raise ValueError(f"image_size must be a (width, height) pair of integers >= 16, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def generate_demo_dataset(out: str | Path, *, subjects: int = 6, images_per_class: int = 40,
                          test_images: int = 40, seed: int = 0, image_size: tuple[int, int] = (320, 240),
                          frames_per_clip: int = 8, progress: Callable[[int, int], None] | None = None,
                          overwrite: bool = False) -> dict:
    """Write the dataset; return a summary dict {"train": n, "test": n, "subjects": [...], "per_class": {...}, "path": str}."""
    _check_positive("subjects", subjects, 2)
    for name, value in (("images_per_class", images_per_class), ("test_images", test_images),
                        ("frames_per_clip", frames_per_clip)):
        _check_positive(name, value)
    _check_positive("seed", seed, 0)
    size = _check_size(image_size)
    out = Path(out)
    for sub in (out / "train", out / "test"):
        if sub.exists() and any(sub.iterdir()):
            if not overwrite:
                raise ValueError(f"refusing to write into non-empty {sub} (pass overwrite=True)")
    if overwrite:
        for sub in (out / "train", out / "test"):
            shutil.rmtree(sub, ignore_errors=True)
        (out / "test_labels.csv").unlink(missing_ok=True)
    styles = [_subject_style(seed, s) for s in range(subjects + test_images)]
    names = [f"subject-{s + 1:0{max(2, len(str(subjects)))}d}" for s in range(subjects)]
    total, done = subjects * 2 * images_per_class + test_images, 0
    for s, name in enumerate(names):
        for ci, label in enumerate(CLASSES):
            for k in range(images_per_class):
                clip, frame = divmod(k, frames_per_clip)
                folder = out / "train" / name / label / f"clip-{clip:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                key = [seed, 2, s, ci, clip]
                room = [seed, 6, s, clip % ROOMS_PER_SUBJECT]
                img = render_scene(label, styles[s], room, key, frame, size)
                _save(img, folder / f"frame-{frame:03d}.jpg", np.random.default_rng([*key, frame, 7]))
                done += 1
                if progress is not None:
                    progress(done, total)
    # Test people are unseen subjects; labels alternate then are shuffled so both classes appear.
    (out / "test").mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 3]).permutation(test_images)
    width, rows = max(4, len(str(test_images))), []
    for i in range(test_images):
        label = CLASSES[int(order[i]) % 2]
        key = [seed, 4, i]
        img = render_scene(label, styles[subjects + i], [seed, 7, i], key, int(order[i]) % frames_per_clip, size)
        stem = f"img_{i + 1:0{width}d}"
        _save(img, out / "test" / f"{stem}.jpg", np.random.default_rng([*key, 7]))
        rows.append((stem, int(label == "fall")))
        done += 1
        if progress is not None:
            progress(done, total)
    with open(out / "test_labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(rows)
    return {"train": subjects * 2 * images_per_class, "test": test_images, "subjects": names,
            "per_class": {c: subjects * images_per_class for c in CLASSES}, "path": str(out)}


def write_jpeg_frames(out_dir: str | Path, n: int, *, image_size: tuple[int, int] = (640, 480),
                      seed: int = 0) -> list[Path]:
    """Write n synthetic scene JPEGs (mixed classes) flat into out_dir; return their paths."""
    _check_positive("n", n, 0)
    _check_positive("seed", seed, 0)
    size = _check_size(image_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        key = [seed, 5, i]
        img = render_scene(CLASSES[i % 2], _subject_style(seed, 10_000 + i // 8), [seed, 8, i // 16], key,
                           i % 8, size)
        path = out_dir / f"frame-{i:05d}.jpg"
        _save(img, path, np.random.default_rng([*key, 7]))
        paths.append(path)
    return paths
