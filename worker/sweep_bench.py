"""Benchmark (printed, not asserted): TPE + ASHA against random search without pruning, same trial budget.

    python -m worker.sweep_bench [--trials 8] [--epochs 6] [--data DIR]

Runs on the demo data (generated into a temporary folder unless --data is given), in this process,
one trial after another (a sweep with max_concurrent 1), through the same code the scheduler and
the worker use: worker.tpe.propose for the proposals and worker.pruning.decide after each epoch, fed
with the trials so far as the scheduler would read them from MLflow; nothing is tracked. Prints the
best validation F1 (weighted, the selection metric) reached, epochs spent and wall time of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlcore.hooks import JobHooks
from mlcore.names import SELECTION_METRIC
from mlcore.params import TrainParams, build
from mlcore.train import run_training
from worker.pruning import decide
from worker.sweep import sweep_params
from worker.tpe import TrialRecord, propose


def run(strategy: str, pruner: str, data_dir: str, trials: int, epochs: int) -> dict:
    """One sweep, sequentially; returns its best F1, epochs spent and wall time."""
    sweep = sweep_params(
        {
            "base": {
                "data_dir": data_dir,
                "arch": "resnet18",
                "pretrained": "none",
                "image_size": 32,
                "epochs": epochs,
                "batch_size": 8,
                "device": "cpu",
                "eval_batch_size": 32,
            },
            "strategy": strategy,
            "samples": trials,
            "seed": 0,
            "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}},
            "grid": {"lr_schedule": ["cosine", "constant"]},
            "pruner": pruner,
            "pruning_warmup_epochs": 0,
        }
    )
    sweep.check()
    combos = sweep.combinations() if strategy != "tpe" else None
    records: list[TrialRecord] = []
    best, spent, t0 = 0.0, 0, time.perf_counter()
    for i in range(trials):
        combo = combos[i] if combos else propose(sweep, records)
        params: TrainParams = build(TrainParams, {**sweep.base, **combo})
        history: dict[int, float] = {}

        def should_prune(epoch, metrics, history=history, params=params):
            history[epoch] = metrics[SELECTION_METRIC]
            siblings = [("pruned" if r.state == "pruned" else "complete", r.history) for r in records]
            return decide(epoch, params.epochs, dict(history), siblings, sweep)

        summary = run_training(params, hooks=JobHooks(should_prune=should_prune))
        spent += summary["epochs_run"]
        state = "pruned" if "pruned" in summary else "complete"
        value = summary[SELECTION_METRIC]
        records.append(TrialRecord(combo, state, value if state == "complete" else None, dict(history)))
        if state == "complete":
            best = max(best, value)
    return {
        "search": f"{strategy}+{pruner}",
        "best_val_f1_weighted": round(best, 4),
        "epochs": spent,
        "pruned": sum(r.state == "pruned" for r in records),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--data", default=None, help="a dataset folder (default: demo data in a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from mlcore.demo_data import generate_demo_dataset

            data = str(Path(tmp) / "demo")
            generate_demo_dataset(
                data, subjects=3, images_per_class=8, test_images=6, seed=1, image_size=(96, 72), frames_per_clip=4
            )
        print(f"{args.trials} trials of up to {args.epochs} epochs each, demo data, CPU, one at a time", flush=True)
        print(f"{'search':<14}{'best val_f1_weighted':>22}{'epochs':>8}{'pruned':>8}{'wall s':>9}", flush=True)
        for strategy, pruner in (("random", "none"), ("tpe", "asha")):
            r = run(strategy, pruner, data, args.trials, args.epochs)
            print(
                f"{r['search']:<14}{r['best_val_f1_weighted']:>22.4f}{r['epochs']:>8}{r['pruned']:>8}"
                f"{r['wall_s']:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
