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
from dataclasses import dataclass
from pathlib import Path

from mlcore.bench.options import add_options, option

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


@dataclass
class QualityConfig:
    """What the comparison trains, one command-line option per field."""

    data: str | None = option(None, "an existing dataset root (default: generate the demo data)")
    subjects: int = option(10, "demo subjects to generate")
    images_per_class: int = option(160, "demo images per subject and class")
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds, each also picks the split")
    epochs: int = option(8, "epochs of both settings")
    large_batch: int = option(256, "the large batch")
    base_lr: float = option(5e-4, "learning rate at batch 16, the quick preset's")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")


def run_quality(*, progress=None, **options) -> dict:
    """Train every setting for every seed (options: QualityConfig fields); return the rows: val F1s, mean, gap."""
    from mlcore.demo_data import generate_demo_dataset
    from mlcore.params import train_params
    from mlcore.train import run_training

    config = QualityConfig(**options)
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="dataslayer-quality-") as tmp:
        root = Path(config.data) if config.data else Path(tmp) / "demo"
        if not config.data:
            say(f"generating the demo data: {config.subjects} subjects x 2 classes x {config.images_per_class} images")
            generate_demo_dataset(
                root, subjects=config.subjects, images_per_class=config.images_per_class, test_images=1
            )
        rows = []
        for name, values in settings(config.base_lr, config.large_batch, config.epochs).items():
            scores, train_images, seconds = [], 0, 0.0
            for seed in config.seeds:
                params = train_params(
                    "quick", data_dir=str(root), epochs=config.epochs, seed=seed, device=config.device, **values
                )
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
        "data": config.data or f"demo: {config.subjects} subjects x 2 classes x {config.images_per_class} images",
        "train_images": train_images,
        "epochs": config.epochs,
        "seeds": list(config.seeds),
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
    add_options(p, QualityConfig)
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
