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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import torch

from mlcore.bench import engine as be
from mlcore.bench.measure import CpuBusy, Runner, machine_info, measure, peak_device_mb, sync
from mlcore.bench.notebook import CNN, NotebookTrainer, decode_resize, notebook_predict
from mlcore.cache import build_image_cache
from mlcore.demo_data import write_jpeg_frames
from mlcore.engine import select_device

FRAME_SIZE = (640, 480)
NOTEBOOK = "notebook: PIL + torchvision transforms, DataLoader workers=0, fp32"
NOTEBOOK_PREDICT = "notebook predict: PIL + val_transform, bs16, fp32"
NOTEBOOK_DECODE = "notebook decode + Resize: PIL, 1 core"
VAL_FRACTION = 0.2

# Defaults per device type: a GPU gets the reference figures' setting; 2 CPU cores get a run of
# about two minutes, ResNet50 at 112 px for the notebook and the engine alike (more, shorter rounds:
# a shared CPU's load comes in bursts, and the median of five resists two bad rounds).
DEFAULTS = {
    "cuda": dict(
        images=4096,
        image_size=224,
        arch="resnet50",
        large_batch=256,
        compile=True,
        test_images=2048,
        predict_batch=512,
        rounds=3,
        round_seconds=2.0,
        e2e_images=1024,
        e2e_epochs=3,
    ),
    "cpu": dict(
        images=256,
        image_size=112,
        arch="resnet50",
        large_batch=64,
        compile=False,
        test_images=128,
        predict_batch=128,
        rounds=5,
        round_seconds=1.0,
        e2e_images=160,
        e2e_epochs=2,
    ),
}


@dataclass
class BenchConfig:
    """What to measure; fields left None take the device's defaults from DEFAULTS."""

    device: str = "auto"
    images: int | None = None  # generated 640x480 JPEG frames, the training data of every configuration
    image_size: int | None = None
    arch: str | None = None
    batch_size: int = 16  # the notebook's
    large_batch: int | None = None  # the throughput preset's
    precision: str = "auto"  # of the fast configurations; auto: bf16 on CUDA and on CPUs with native bf16
    compile: bool | None = None
    test_images: int | None = None
    predict_batch: int | None = None
    rounds: int | None = None
    round_seconds: float | None = None
    job_images: int = 10_000
    job_epochs: int = 20
    e2e_images: int | None = None
    e2e_epochs: int | None = None  # 0 skips the end-to-end job
    data_dir: str | None = None  # keep (and reuse) the generated frames here


def resolve_config(config: BenchConfig, device: torch.device) -> BenchConfig:
    """Fill the device defaults in and check that the sizes fit together."""
    for key, value in DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    config.test_images = min(config.test_images, config.images)
    config.e2e_images = min(config.e2e_images, config.images)
    if config.images < max(config.batch_size, config.large_batch):
        raise ValueError(
            f"images ({config.images}) must hold at least one batch of {max(config.batch_size, config.large_batch)}"
        )
    if config.precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {config.precision!r}")
    if config.e2e_epochs and config.e2e_images < 40:
        raise ValueError("e2e_images must be at least 40 (5 subjects with both classes)")
    return config


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where oneDNN's bf16 kernels beat fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_precision(requested: str, device: torch.device) -> str:
    """The precision of the fast configurations."""
    if requested != "auto":
        return requested
    return "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"


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
    results["memory"] = _memory(results, dev)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["notes"] += _notes(results, dev)
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


def _memory(results: dict, device: torch.device) -> dict:
    per = {name: r["peak_mb"] for group in ("train", "predict") for name, r in results[group].items()}
    if device.type == "cuda":
        return {
            "kind": "torch.cuda.max_memory_allocated during each configuration's warm-up "
            "(all models alive then included)",
            "peak_mb": max([*per.values(), peak_device_mb(device)]),
            "per_configuration_mb": per,
        }
    return {"kind": "peak RSS of the whole process (resource.getrusage)", "peak_mb": peak_device_mb(device)}


def _notes(results: dict, device: torch.device) -> list[str]:
    notes = [
        "job wall times exclude MLflow logging and model registration",
        "ceilings run the same model, optimizer and train step on one batch already on the device",
    ]
    e2e = results["job"].get("end_to_end", {})
    if "skipped" in e2e:
        notes.append(e2e["skipped"])
    elif e2e:
        notes.append("end-to-end first_step_s is what run_training reports: the end of its first epoch")
    if device.type == "cpu":
        notes.append("CPU: torch.compile is off unless --compile; bf16 autocast is used where the CPU has native bf16")
    return notes


def table_rows(results: dict) -> list[dict]:
    """Rows of (configuration, img/s, ratio to the notebook's figure of the same kind, share of its ceiling)."""
    rows = []

    def add(name: str, rate: float, base: float | None, ceiling: float | None = None) -> None:
        rows.append(
            {
                "configuration": name,
                "img_per_s": rate,
                "ratio_to_notebook": rate / base if base else None,
                "share_of_ceiling": rate / ceiling if ceiling else None,
            }
        )

    for group, base_name in (("train", NOTEBOOK), ("predict", NOTEBOOK_PREDICT)):
        figures = results[group]
        for name, r in figures.items():
            ceiling = figures.get(r.get("ceiling", ""), {}).get("img_per_s")
            add(
                name + (f", bs{r['batch']}" if name == NOTEBOOK else ""),
                r["img_per_s"],
                figures[base_name]["img_per_s"],
                ceiling,
            )
    decode = results["decode"]
    add(NOTEBOOK_DECODE, decode["notebook_img_per_s"], decode["notebook_img_per_s"])
    add(
        f"decode into the cache: {decode['path']} ({decode['cpu_busy_share']:.0%} of all cores busy)",
        decode["img_per_s"],
        decode["notebook_img_per_s"],
    )
    job, config = results["job"], results["config"]
    nb_wall = job["projection"]["notebook"]["wall_s"]
    for name, p in job["projection"].items():
        label = f"job {p['epochs']} epochs x {p['images']} images, projected ({_duration(p['wall_s'])}): {name}"
        add(label, p["epochs"] * p["images"] / p["wall_s"], p["epochs"] * p["images"] / nb_wall)
    e2e = job.get("end_to_end", {})
    if "wall_s" in e2e:
        add(
            f"job {e2e['epochs_run']} epochs x {config['e2e_images']} images, "
            f"measured end to end ({_duration(e2e['wall_s'])}; "
            f"projected {_duration(e2e['projected']['wall_s'])}): {e2e['configuration']}",
            e2e["epochs_run"] * config["e2e_images"] / e2e["wall_s"],
            None,
        )
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _num(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def format_table(results: dict) -> str:
    """The facts (machine, first step, memory) and then the Markdown table of every figure."""
    m, job, mem = results["machine"], results["job"], results["memory"]
    lines = [
        f"{m['device_name']} ({m['device']}), torch {m['torch']}, {m['cpu_count']} CPUs, {m['date']}, "
        f"load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}",
        f"command: {m['command']}",
    ]
    lines += [
        f"time to first training step (decode + build + first step), {name}: {_duration(s)}"
        for name, s in job["time_to_first_step_s"].items()
    ]
    lines.append(f"peak memory: {mem['peak_mb']:,.0f} MiB ({mem['kind']})")
    lines += [f"note: {n}" for n in results["notes"]]
    lines += ["", "| configuration | img/s | ratio to the notebook | share of its ceiling |", "|---|---:|---:|---:|"]
    for r in results["rows"]:
        ratio = f"{r['ratio_to_notebook']:.2f}x" if r["ratio_to_notebook"] else "-"
        share = f"{r['share_of_ceiling']:.0%}" if r["share_of_ceiling"] else "-"
        lines.append(f"| {r['configuration']} | {_num(r['img_per_s'])} | {ratio} | {share} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every option maps to a BenchConfig field of the same name."""
    p = argparse.ArgumentParser(prog="python -m mlcore.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--images", type=int, help="640x480 JPEG frames to generate (default: cuda 4096, cpu 256)")
    p.add_argument("--image-size", type=int, help="training size in pixels (default: cuda 224, cpu 112)")
    p.add_argument("--arch", choices=("resnet18", "resnet34", "resnet50"), help="model (default resnet50)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write every figure and the machine facts here")
    p.add_argument("--batch-size", type=int, default=16, help="the notebook's batch size (default 16)")
    p.add_argument("--large-batch", type=int, help="the throughput preset's batch (default: cuda 256, cpu 64)")
    p.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto", help="precision of the fast settings"
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure torch.compile (default: on for cuda)",
    )
    p.add_argument("--test-images", type=int, help="images predicted per prediction job")
    p.add_argument("--predict-batch", type=int, help="inference batch (default: cuda 512, cpu 128)")
    p.add_argument(
        "--rounds",
        type=int,
        help="interleaved timed rounds per configuration, median reported (default: cuda 3, cpu 5)",
    )
    p.add_argument("--round-seconds", type=float, help="target seconds per configuration per round")
    p.add_argument("--job-images", type=int, default=10_000, help="images of the projected full job")
    p.add_argument("--job-epochs", type=int, default=20, help="epochs of the projected full job")
    p.add_argument("--e2e-images", type=int, help="images of the job measured end to end")
    p.add_argument("--e2e-epochs", type=int, help="epochs of the job measured end to end (0 skips it)")
    p.add_argument("--data-dir", help="keep the generated frames here and reuse them next time")
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
