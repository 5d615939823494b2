"""`python -m mlcore.bench.quality_cv`: which validation estimate predicts the hidden test F1?

On the demo data (train/ subjects, a test/ set of unseen people and its test_labels.csv) it trains,
for each seed: one model validated on the notebook's image split, one on the subject split, and a
K-fold subject cross-validation (its fold ensemble), then predicts the test set with each at its
own tuned threshold, as a submission would. It prints each estimate (validation F1 at the tuned
threshold; for the CV the out-of-fold F1 and the mean of the folds' F1) next to the test F1 of the
model it belongs to, the gap between them, and which estimate is closest.

`--preset small` (default) is a CPU-sized stand-in for the notebook: the `quick` preset's ResNet18
from scratch at 64 px, 6 epochs. `--preset seed` trains the notebook's own recipe (ResNet50 from
ImageNet at 224 px, 20 epochs, batch 16; a GPU job), every other setting unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlcore.bench.options import add_options, option
from mlcore.hooks import NullTracker

# The CPU stand-in: the quick preset, shorter. The seed preset's split (image) is set per method below.
SMALL = dict(epochs=6)
METHODS = ("image split", "subject split", "subject CV (out of fold)", "subject CV (mean of folds)")


@dataclass
class QualityCvConfig:
    """What the comparison trains, one command-line option per field."""

    data: str | None = option(None, "an existing dataset root with test/ and test_labels.csv (default: the demo)")
    subjects: int = option(8, "demo subjects to generate (training)")
    images_per_class: int = option(30, "demo images per subject and class")
    test_images: int = option(160, "demo test images (unseen people)")
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds: each picks the split, folds, initialisation and order")
    cv_folds: int = option(5, "folds of the subject cross-validation")
    preset: str = option("small", "small: ResNet18 64 px 6 epochs (CPU); seed: the notebook", choices=("small", "seed"))
    epochs: int | None = option(None, "override the preset's epochs")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")


class _KeepModel(NullTracker):
    """Records nothing, keeps the registered model (a single model or the fold ensemble) to predict the test set."""

    def log_model(self, model, info):
        self.model, self.info = model, dict(info)
        return {}


def _test_f1(root: Path, model, info: dict, tmp: Path, device: str, cache: Path) -> float:
    """Binary F1 on the test set of the model at its own tuned threshold (the submission's labels)."""
    import pandas as pd
    from sklearn.metrics import f1_score

    from mlcore.params import PredictParams, build
    from mlcore.predict import run_prediction

    out = tmp / "submission.csv"
    pred = build(PredictParams, {"data_dir": str(root), "output": str(out), "device": device})
    run_prediction(pred, model, info, cache_dir=cache)
    merged = pd.read_csv(root / "test_labels.csv").merge(pd.read_csv(out), on="id", suffixes=("_true", "_pred"))
    return float(f1_score(merged["label_true"], merged["label_pred"]))


def run_quality_cv(*, progress=None, **options) -> dict:
    """Train every method for every seed (options: QualityCvConfig fields); return estimates and test F1s."""
    from mlcore.demo_data import generate_demo_dataset
    from mlcore.params import train_params
    from mlcore.train import run_training

    config = QualityCvConfig(**options)
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    preset = "quick" if config.preset == "small" else "seed"
    base = {**(SMALL if config.preset == "small" else {}), "device": config.device}
    if config.epochs is not None:
        base["epochs"] = config.epochs
    per_seed: dict[str, list[dict]] = {m: [] for m in METHODS}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dataslayer-quality-cv-") as tmp_name:
        tmp = Path(tmp_name)
        root = Path(config.data) if config.data else tmp / "demo"
        if not config.data:
            say(
                f"generating the demo data: {config.subjects} subjects x 2 classes x {config.images_per_class} "
                f"images, {config.test_images} test images"
            )
            generate_demo_dataset(
                root,
                subjects=config.subjects,
                images_per_class=config.images_per_class,
                test_images=config.test_images,
            )
        cache = tmp / "cache"
        for seed in config.seeds:
            runs = {
                "image split": {"split": "image"},
                "subject split": {"split": "subject"},
                "subject CV": {"split": "subject", "cv_folds": config.cv_folds},
            }
            for name, values in runs.items():
                params = train_params(preset, data_dir=str(root), seed=seed, **base, **values)
                tracker = _KeepModel()
                t0 = time.perf_counter()
                summary = run_training(params, tracker=tracker, cache_dir=cache)
                test = _test_f1(root, tracker.model, tracker.info, tmp, config.device, cache)
                seconds = time.perf_counter() - t0
                if name == "subject CV":
                    per_seed["subject CV (out of fold)"].append({"val": summary["threshold_f1"], "test": test})
                    per_seed["subject CV (mean of folds)"].append(
                        {"val": summary["cv_mean_val_f1_at_threshold"], "test": test}
                    )
                else:
                    per_seed[name].append({"val": summary["threshold_f1"], "test": test})
                val = summary["threshold_f1"]
                say(f"seed {seed}, {name}: validation F1 {val:.3f}, test F1 {test:.3f} ({seconds:.0f} s)")
    rows = []
    for method in METHODS:
        vals = [r["val"] for r in per_seed[method]]
        tests = [r["test"] for r in per_seed[method]]
        gaps = [v - t for v, t in zip(vals, tests)]
        rows.append(
            {
                "method": method,
                "val_f1": vals,
                "test_f1": tests,
                "mean_val_f1": statistics.fmean(vals),
                "mean_test_f1": statistics.fmean(tests),
                "mean_gap": statistics.fmean(gaps),
                "mean_abs_gap": statistics.fmean(abs(g) for g in gaps),
            }
        )
    closest = min(rows, key=lambda r: r["mean_abs_gap"])["method"]
    return {
        "data": config.data
        or f"demo: {config.subjects} subjects x 2 classes x {config.images_per_class} images, "
        f"{config.test_images} test images of unseen people",
        "preset": config.preset,
        "config": _describe(preset, base),
        "cv_folds": config.cv_folds,
        "seeds": list(config.seeds),
        "rows": rows,
        "closest": closest,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def _describe(preset: str, base: dict) -> str:
    """The trained configuration in words."""
    from mlcore.params import PRESETS

    values = {**PRESETS[preset], **base}
    keys = ("arch", "pretrained", "image_size", "epochs", "batch_size", "learning_rate", "lr_schedule")
    return f"preset {preset}: " + ", ".join(f"{k} {values[k]}" for k in keys if k in values)


def format_table(results: dict) -> str:
    """A Markdown table, one row per estimate: validation F1 against the test F1 of the same model."""
    lines = [
        f"{results['data']}; {results['config']}; seeds {', '.join(map(str, results['seeds']))}; "
        f"{results['cv_folds']}-fold CV; F1 of the fall class at each model's tuned threshold",
        "",
        "| estimate | validation F1 per seed | mean | test F1 per seed | mean | validation - test | abs gap |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in results["rows"]:
        vals = " / ".join(f"{v:.3f}" for v in r["val_f1"])
        tests = " / ".join(f"{v:.3f}" for v in r["test_f1"])
        lines.append(
            f"| {r['method']} | {vals} | {r['mean_val_f1']:.3f} | {tests} | {r['mean_test_f1']:.3f} "
            f"| {r['mean_gap']:+.3f} | {r['mean_abs_gap']:.3f} |"
        )
    lines += ["", f"closest to the test F1: {results['closest']} ({results['seconds']:.0f} s in all)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison from the command line; the table is printed last."""
    p = argparse.ArgumentParser(prog="python -m mlcore.bench.quality_cv", description=__doc__.split("\n\n")[0])
    add_options(p, QualityCvConfig)
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the results here")
    args = vars(p.parse_args(argv))
    json_path = args.pop("json_path")
    results = run_quality_cv(**args)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
