"""`python -m mlcore.bench.quality`: does the throughput preset's large batch keep model quality?

On the demo data (generated at a chosen size, or an existing dataset) it trains the batch-16
setting and the large-batch setting for the same number of epochs and seeds, and prints the
validation F1 of each side by side. The large batch follows the throughput preset's rule: the
learning rate scaled linearly from the batch-16 one (Goyal et al., 2017), two warm-up epochs,
cosine decay. CPU-sized defaults: the `quick` preset (ResNet18 from scratch, 64 px, 8 epochs).
Large batches need tens of optimizer steps per epoch; the table shows the count for each row.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_BATCH = 16
WARMUP_EPOCHS = {"reference": 1.0, "large": 2.0}


def settings(base_lr: float, large_batch: int, epochs: int) -> dict[str, dict]:
    """The two settings compared: batch 16 and the large batch at the linearly scaled learning rate."""
    return {
        f"batch {REFERENCE_BATCH}, lr {base_lr:g}": dict(
            batch_size=REFERENCE_BATCH, learning_rate=base_lr, warmup_epochs=min(WARMUP_EPOCHS["reference"], epochs)
        ),
        f"batch {large_batch}, lr {base_lr * large_batch / REFERENCE_BATCH:g} (linear)": dict(
            batch_size=large_batch,
            learning_rate=base_lr * large_batch / REFERENCE_BATCH,
            warmup_epochs=min(WARMUP_EPOCHS["large"], epochs),
        ),
    }


def run_quality(
    *,
    data: str | None = None,
    subjects: int = 10,
    images_per_class: int = 160,
    seeds=(0, 1, 2),
    epochs: int = 8,
    large_batch: int = 256,
    base_lr: float = 5e-4,
    device: str = "auto",
    progress=None,
) -> dict:
    """Train every setting for every seed; return the rows (val F1 per seed, mean, gap to batch 16)."""
    from mlcore.demo_data import generate_demo_dataset
    from mlcore.params import train_params
    from mlcore.train import run_training

    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="dataslayer-quality-") as tmp:
        root = Path(data) if data else Path(tmp) / "demo"
        if not data:
            say(f"generating the demo data: {subjects} subjects x 2 classes x {images_per_class} images")
            generate_demo_dataset(root, subjects=subjects, images_per_class=images_per_class, test_images=1)
        rows = []
        for name, values in settings(base_lr, large_batch, epochs).items():
            scores, train_images, seconds = [], 0, 0.0
            for seed in seeds:
                params = train_params("quick", data_dir=str(root), epochs=epochs, seed=seed, device=device, **values)
                t0 = time.perf_counter()
                summary = run_training(params, cache_dir=Path(tmp) / "cache")
                seconds += time.perf_counter() - t0
                scores.append(summary["val_f1"])
                train_images = summary["train_images"]
                say(f"{name}, seed {seed}: val F1 {summary['val_f1']:.3f} (best epoch {summary['best_epoch']})")
            rows.append(
                {
                    "setting": name,
                    **values,
                    "steps_per_epoch": math.ceil(train_images / values["batch_size"]),
                    "val_f1": scores,
                    "mean": statistics.fmean(scores),
                    "seconds": round(seconds, 1),
                }
            )
    for row in rows:
        row["gap_to_reference"] = row["mean"] - rows[0]["mean"]
    return {
        "data": data or f"demo: {subjects} subjects x 2 classes x {images_per_class} images",
        "train_images": train_images,
        "epochs": epochs,
        "seeds": list(seeds),
        "rows": rows,
    }


def format_table(results: dict) -> str:
    """A Markdown table, one row per setting."""
    lines = [
        f"{results['data']}; {results['train_images']} training images, {results['epochs']} epochs, "
        f"seeds {', '.join(map(str, results['seeds']))}",
        "",
        "| setting | steps per epoch | val F1 per seed | mean | gap to batch 16 |",
        "|---|---:|---|---:|---:|",
    ]
    for r in results["rows"]:
        per_seed = " / ".join(f"{v:.3f}" for v in r["val_f1"])
        lines.append(
            f"| {r['setting']} | {r['steps_per_epoch']} | {per_seed} | {r['mean']:.3f} | {r['gap_to_reference']:+.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison from the command line; the table is printed last."""
    p = argparse.ArgumentParser(prog="python -m mlcore.bench.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="an existing dataset root (default: generate the demo data)")
    p.add_argument("--subjects", type=int, default=10, help="demo subjects to generate (default 10)")
    p.add_argument("--images-per-class", type=int, default=160, help="demo images per subject and class (default 160)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (each also picks the split)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--large-batch", type=int, default=256)
    p.add_argument(
        "--base-lr", type=float, default=5e-4, help="learning rate at batch 16 (default: the quick preset's)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the results here")
    args = vars(p.parse_args(argv))
    json_path = args.pop("json_path")
    results = run_quality(**args)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
