"""`python -m mlcore.bench`: the notebook's pipeline and the project's engine side by side, in one process.

On the same generated 640x480 JPEG frames it measures: training img/s of the notebook as written,
of the engine at the notebook's hyperparameters and of the throughput preset, each against its
compute-only ceiling; prediction from JPEG files to submission rows and the inference ceiling;
decoding into the image cache, time to first step and peak memory; and the wall time of a full
job, projected from those parts and measured end to end for a small case. It prints progress on
stderr and the table last on stdout, and writes every figure with the machine facts as JSON.
Imports only torch, torchvision, numpy, pillow and scikit-learn (the end-to-end job is skipped,
with a note, where the project's pydantic parameters are not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Iterator

import torch

from mlcore.bench import engine as be
from mlcore.bench.config import (
    DEFAULTS,
    FRAME_SIZE,
    NOTEBOOK,
    NOTEBOOK_PREDICT,
    VAL_FRACTION,
    BenchConfig,
    fast_precision,
    resolve_config,
)
from mlcore.bench.measure import CpuBusy, Runner, machine_info, measure, sync
from mlcore.bench.notebook import CNN, NotebookTrainer, decode_resize, notebook_predict
from mlcore.bench.options import add_options
from mlcore.bench.report import format_table, memory_figures, summary_notes, table_rows
from mlcore.cache import build_image_cache
from mlcore.demo_data import write_jpeg_frames
from mlcore.engine import select_device


def train_specs(config: BenchConfig, device: torch.device) -> list[be.TrainSpec]:
    """The engine at the notebook's hyperparameters (default, fast precision, compiled) and the throughput preset."""
    cuda, b, big = device.type == "cuda", config.batch_size, config.large_batch
    auto, fast = ("bf16" if cuda else "fp32"), fast_precision(config.precision, device)
    lr, big_lr = 2e-5, 2e-5 * big / 16  # the notebook's rate, scaled linearly as the throughput preset does
    specs = [be.TrainSpec(f"engine bs{b} {auto}", b, auto, False, lr)]
    if fast != auto:
        specs.append(be.TrainSpec(f"engine bs{b} {fast}", b, fast, False, lr))
    if config.compile:
        specs.append(
            be.TrainSpec(
                f"engine bs{b} {fast} compiled{' (CUDA graphs)' if cuda and b <= 64 else ''}", b, fast, True, lr
            )
        )
    specs.append(be.TrainSpec(f"throughput bs{big} {fast}", big, fast, False, big_lr))
    if config.compile:
        specs.append(be.TrainSpec(f"throughput bs{big} {fast} compiled", big, fast, True, big_lr))
    return specs


def prepare_frames(folder: Path, n: int) -> list[Path]:
    """n synthetic 640x480 JPEG frames, generated on all cores, reused when the folder already holds them."""
    marker, want = folder / "frames.json", {"images": n, "frame_size": list(FRAME_SIZE), "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return sorted(folder.glob("part-*/*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    workers = max(1, min(os.cpu_count() or 1, n // 32))
    parts = [(str(folder / f"part-{i:02d}"), n // workers + (i < n % workers), i) for i in range(workers)]
    # Fork is safe while CUDA is untouched (frames are made before anything runs on the device).
    ctx = multiprocessing.get_context("spawn" if torch.cuda.is_initialized() else "fork")
    with ctx.Pool(workers) as pool:  # the task is the library function itself: picklable however bench was started
        jobs = [
            pool.apply_async(write_jpeg_frames, (out, count), {"image_size": FRAME_SIZE, "seed": seed})
            for out, count, seed in parts
        ]
        for job in jobs:
            job.get()
    marker.write_text(json.dumps(want))
    return sorted(folder.glob("part-*/*.jpg"))


def frame_labels(frames: list[Path]) -> list[int]:
    """write_jpeg_frames draws even-numbered frames as falls (label 1)."""
    return [int(int(p.stem.split("-")[-1]) % 2 == 0) for p in frames]


def measure_decode(frames: list[Path], config: BenchConfig, device: torch.device):
    """Decode every frame into the image cache (threads on CPU, nvjpeg on CUDA); returns (cache, figures)."""
    if device.type == "cuda":
        build_image_cache(frames[:16], config.image_size, device=device)  # CUDA context and nvjpeg start-up
    with CpuBusy() as busy:
        cache = build_image_cache(frames, config.image_size, device=device)
        sync(device)
    n_nb = min(len(frames), 64)
    t0 = time.perf_counter()
    decode_resize(frames[:n_nb], config.image_size)
    nb_rate = n_nb / (time.perf_counter() - t0)
    gpu = device.type == "cuda" and os.environ.get("DATASLAYER_GPU_DECODE", "1") == "1"
    return cache, {
        "images": len(frames),
        "seconds": busy.seconds,
        "img_per_s": len(frames) / busy.seconds,
        "cpu_busy_share": busy.share,
        "path": "nvjpeg on the GPU" if gpu else f"PIL, {os.cpu_count()} cores",
        "location": cache.location,
        "notebook_img_per_s": nb_rate,
    }


def measure_training(config, device, frames, labels, cache, specs, say) -> dict:
    """The notebook, then every engine setting with its compute ceiling, timed in interleaved rounds."""
    nb = NotebookTrainer(
        frames, labels, arch=config.arch, size=config.image_size, device=device, batch_size=config.batch_size
    )
    info = {"kind": "train", "batch": config.batch_size, "precision": "fp32", "ceiling": NOTEBOOK + " ceiling"}
    runners = [
        Runner(NOTEBOOK, nb.run, device, 2, rewarm=1, info=info),
        Runner(NOTEBOOK + " ceiling", nb.run_ceiling, device, 2, rewarm=1, info={**info, "kind": "ceiling"}),
    ]
    label_tensor = torch.as_tensor(labels, dtype=torch.long)
    for spec in specs:
        say(f"building {spec.label}")
        trainer = be.EngineTrainer(spec, cache, label_tensor, arch=config.arch, device=device)
        # CUDA graph trees record on the first calls and replay from the third: warm up past that.
        warm = 5 if spec.compiled else 2
        info = {
            "kind": "train",
            "batch": spec.batch,
            "precision": spec.precision,
            "compiled": spec.compiled,
            "setup_s": trainer.setup_s,
            "ceiling": spec.label + " ceiling",
        }
        runners += [
            Runner(spec.label, trainer.run, device, warm, rewarm=1, info=info),
            Runner(
                spec.label + " ceiling", trainer.run_ceiling, device, warm, rewarm=1, info={**info, "kind": "ceiling"}
            ),
        ]
    return measure(runners, rounds=config.rounds, round_s=config.round_seconds, progress=say)


def measure_prediction(config, device, files, say) -> dict:
    """The notebook's test loop, the engine's JPEG-to-rows prediction and the inference ceiling, interleaved."""
    precision = fast_precision(config.precision, device)
    predictor = be.EnginePredictor(
        files, arch=config.arch, size=config.image_size, device=device, precision=precision, batch=config.predict_batch
    )
    ceiling = be.InferenceCeiling(predictor)
    nb_model = CNN(config.arch).to(device)

    def notebook(jobs: int) -> int:
        for _ in range(jobs):
            notebook_predict(nb_model, files, size=config.image_size, device=device)
        return jobs * len(files)

    eval_rates: list[float] = []

    def engine(jobs: int) -> int:
        for _ in range(jobs):
            predictor.run(1)
            eval_rates.append(len(files) / predictor.last["infer_s"])
        return jobs * len(files)

    engine_name = f"engine predict: JPEG -> rows, bs{config.predict_batch} {precision}"
    ceiling_name = f"inference ceiling, bs{config.predict_batch} {precision}"
    runners = [
        Runner(NOTEBOOK_PREDICT, notebook, device, 1, max_steps=1, info={"kind": "predict"}),
        Runner(engine_name, engine, device, 1, max_steps=1, info={"kind": "predict", "ceiling": ceiling_name}),
        Runner(ceiling_name, ceiling.run, device, 3, rewarm=1, info={"kind": "ceiling"}),
    ]
    out = measure(runners, rounds=config.rounds, round_s=config.round_seconds, progress=say)
    # Inference from the cache alone (the engine's validation pass), median over the timed jobs.
    out[engine_name]["eval_img_per_s"] = statistics.median(eval_rates[1:] or eval_rates)
    return out


def measure_job(config, device, results, frames, labels, specs, root: Path, say) -> dict:
    """Time to first step per setting, the projected wall time of a full job, and a small job end to end."""
    train, predict, decode = results["train"], results["predict"], results["decode"]
    eval_rate = next(r["eval_img_per_s"] for r in predict.values() if "eval_img_per_s" in r)
    n_val = round(config.job_images * VAL_FRACTION)
    metrics = be.metrics_seconds(n_val)
    common = dict(
        images=config.job_images,
        epochs=config.job_epochs,
        val_fraction=VAL_FRACTION,
        per_epoch_s=metrics["epoch_metrics_s"],
        final_s=metrics["final_s"],
    )
    projection = {
        "notebook": be.project_job(
            train_rate=train[NOTEBOOK]["img_per_s"], eval_rate=predict[NOTEBOOK_PREDICT]["img_per_s"], **common
        )
    }
    first_step = {}
    for spec in specs:
        t = train[spec.label]
        start = t["setup_s"] + t["first_step_s"] - t["step_s"]  # model build, compilation, autotuning
        first_step[spec.label] = decode["seconds"] + t["setup_s"] + t["first_step_s"]
        projection[spec.label] = be.project_job(
            train_rate=t["img_per_s"], eval_rate=eval_rate, decode_rate=decode["img_per_s"], start_s=start, **common
        )
    job = {"metrics_s": metrics, "time_to_first_step_s": first_step, "projection": projection}
    if config.e2e_epochs:
        say(f"end-to-end job: {config.e2e_images} images, {config.e2e_epochs} epochs")
        n, spec = config.e2e_images, specs[0]
        train_dir = be.link_layout(frames[:n], labels[:n], root / "e2e")
        e2e = be.run_end_to_end(
            train_dir,
            arch=config.arch,
            size=config.image_size,
            epochs=config.e2e_epochs,
            batch=spec.batch,
            precision=spec.precision,
            compile_mode="off",
            device=device,
        )
        if "wall_s" in e2e:
            t = train[spec.label]
            e2e["configuration"] = spec.label
            e2e["projected"] = be.project_job(
                images=n,
                epochs=e2e["epochs_run"],
                val_fraction=e2e["val_images"] / n,
                train_rate=t["img_per_s"],
                eval_rate=eval_rate,
                decode_rate=decode["img_per_s"],
                start_s=t["setup_s"] + t["first_step_s"] - t["step_s"],
                per_epoch_s=metrics["epoch_metrics_s"],
                final_s=metrics["final_s"],
            )
        job["end_to_end"] = e2e
    return job


def _progress_printer() -> Callable[[str], None]:
    t0 = time.perf_counter()
    return lambda msg: print(f"[bench {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _workdir(data_dir: str | None) -> Iterator[Path]:
    """The given folder (kept), or a temporary one removed afterwards."""
    if data_dir:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        yield Path(data_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="dataslayer-bench-") as tmp:
            yield Path(tmp)


def run_benchmark(
    device: str = "auto",
    *,
    json_path: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    **options,
) -> dict:
    """Run every measurement (options: BenchConfig fields) and return all figures; writes JSON when asked."""
    unknown = set(options) - {f.name for f in fields(BenchConfig)}
    if unknown:
        raise TypeError(f"unknown benchmark options: {', '.join(sorted(unknown))}")
    say = progress or _progress_printer()
    try:
        dev = select_device(device)
    except RuntimeError as exc:  # CUDA asked for but absent: a bad argument, not a crash
        raise ValueError(str(exc)) from None
    config = resolve_config(BenchConfig(device=device, **options), dev)
    specs = train_specs(config, dev)
    load_start = list(os.getloadavg())
    results: dict = {"machine": {}, "config": asdict(config), "notes": []}
    with _workdir(config.data_dir) as root:
        say(f"{config.images} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} in {root}")
        frames = prepare_frames(root / "frames", config.images)  # first: it forks, which CUDA must not precede
        labels = frame_labels(frames)
        results["machine"] = {**machine_info(dev), "loadavg_start": load_start}
        say(f"decoding into the image cache at {config.image_size} px")
        cache, results["decode"] = measure_decode(frames, config, dev)
        results["train"] = measure_training(config, dev, frames, labels, cache, specs, say)
        del cache
        _release(dev)
        results["predict"] = measure_prediction(config, dev, frames[: config.test_images], say)
        results["job"] = measure_job(config, dev, results, frames, labels, specs, root, say)
    results["memory"] = memory_figures(results, dev)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["notes"] += summary_notes(results, dev)
    results["rows"] = table_rows(results)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str))
        say(f"wrote {json_path}")
    return results


def _release(device: torch.device) -> None:
    """Free the training models (their batch streams form reference cycles) before the next group."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: BenchConfig's fields as options, plus where the JSON goes and quiet."""
    p = argparse.ArgumentParser(prog="python -m mlcore.bench", description=__doc__.split("\n\n")[0])
    add_options(p, BenchConfig, defaults=DEFAULTS)
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write every figure and the machine facts here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line; the table is printed last."""
    args = vars(parse_args(argv))
    quiet = args.pop("quiet")
    options = {k: v for k, v in args.items() if v is not None}
    try:
        results = run_benchmark(progress=(lambda msg: None) if quiet else None, **options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    return 0
