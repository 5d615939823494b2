"""Benchmark (printed, not asserted): trials per hour of one sweep with 1, 2 and 4 job slots on one device.

    python -m worker.slots_bench [--slots 1 2 4] [--trials 8] [--epochs 2] [--device auto] [--json PATH]
    python -m worker.slots_bench --notebook --trials 8    # ResNet50, 224 px, batch 16, 20 epochs, 4,300 images

Each slot is what DATASLAYER_SLOTS_PER_GPU gives a worker: a fresh process per trial, on the same device,
with its share of the GPU's memory (DATASLAYER_GPU_FRACTION = 1/slots: the caching allocator's cap and
the image cache's budget) and, on a CPU, its share of the cores (torch threads = cores / slots). The
trials are one sweep's (the learning rate varies, log-spaced) on the demo data, decoded once into the
shared on-disk image cache before the first timing, as a sweep's later trials find it. Nothing is
tracked: the figure is the device's throughput, not MLflow's. Prints trials/hour and the ratio to one slot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlcore.names import GPU_FRACTION_ENV

NOTEBOOK = {"arch": "resnet50", "image_size": 224, "batch_size": 16, "epochs": 20, "pretrained": "none"}
THREADS_ENV = "DATASLAYER_BENCH_THREADS"


def trial_values(data: str, args: argparse.Namespace, i: int) -> dict:
    """Trial i of the fixed sweep: the configuration asked for, its learning rate log-spaced over 1e-4..1e-2."""
    base = NOTEBOOK if args.notebook else {"arch": args.arch, "image_size": args.image_size, "pretrained": "none"}
    lr = 10 ** (-4 + 2 * i / max(args.trials - 1, 1))
    values = {"batch_size": args.batch_size, "epochs": args.epochs, **base, "data_dir": data, "device": args.device}
    return {**values, "learning_rate": lr, "seed": i}


def one_trial(values: dict, cache_dir: str) -> float:
    """Train one trial in this process (a slot's job process); its wall seconds."""
    import torch

    from mlcore.params import TrainParams, build
    from mlcore.train import run_training

    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    t0 = time.perf_counter()
    run_training(build(TrainParams, values), cache_dir=cache_dir)
    return time.perf_counter() - t0


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def run_slots(slots: int, trials: list[dict], cache_dir: str, device: str) -> dict:
    """All trials through `slots` concurrent processes; trials/hour over the whole sweep."""
    env = {**os.environ, GPU_FRACTION_ENV: repr(1 / slots)}
    if device == "cpu":
        env[THREADS_ENV] = str(max(1, (os.cpu_count() or 1) // slots))

    def launch(values: dict) -> float:
        cmd = [sys.executable, "-m", "worker.slots_bench", "--one", json.dumps(values), "--cache-dir", cache_dir]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"a trial failed with {slots} slots:\n{done.stderr[-2000:]}")
        return float(done.stdout.strip().splitlines()[-1])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        seconds = list(pool.map(launch, trials))
    wall = time.perf_counter() - t0
    return {
        "slots": slots,
        "trials": len(trials),
        "wall_s": round(wall, 1),
        "trial_s_mean": round(sum(seconds) / len(seconds), 1),
        "trials_per_hour": round(len(trials) / wall * 3600, 1),
    }


def _data(args: argparse.Namespace, tmp: str) -> str:
    if args.data:
        return args.data
    from mlcore.demo_data import generate_demo_dataset

    per_class = 430 if args.notebook else args.images_per_class  # 5 subjects x 2 classes x 430 = 4,300 images
    data = str(Path(tmp) / "demo")
    generate_demo_dataset(data, subjects=5, images_per_class=per_class, test_images=2, seed=1, image_size=(96, 72))
    return data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--images-per-class", type=int, default=12, help="per subject (5 subjects) of the demo data")
    ap.add_argument("--notebook", action="store_true", help="the notebook's configuration on 4,300 demo images")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None, help="a dataset folder (default: demo data in a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a slot's trial process
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(one_trial(json.loads(args.one), args.cache_dir))
        return
    device = _device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data, cache_dir = _data(args, tmp), str(Path(tmp) / "cache")
        trials = [trial_values(data, args, i) for i in range(args.trials)]
        run_slots(1, [{**trials[0], "epochs": 1}], cache_dir, device)  # decode once into the shared cache
        shown = trials[0]
        print(
            f"{args.trials} trials of {shown['arch']} {shown['image_size']} px, batch {shown['batch_size']}, "
            f"{shown['epochs']} epochs on {device} ({os.cpu_count()} cores)",
            flush=True,
        )
        print(f"{'slots':>5}{'wall s':>9}{'s/trial':>9}{'trials/h':>10}{'vs 1 slot':>11}", flush=True)
        rows = []
        for slots in args.slots:
            row = run_slots(slots, trials, cache_dir, device)
            row["vs_first"] = round(
                row["trials_per_hour"] / (rows[0]["trials_per_hour"] if rows else row["trials_per_hour"]), 2
            )
            rows.append(row)
            print(
                f"{slots:>5}{row['wall_s']:>9.1f}{row['trial_s_mean']:>9.1f}{row['trials_per_hour']:>10.1f}"
                f"{row['vs_first']:>10.2f}x",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
