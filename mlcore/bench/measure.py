"""Timing primitives of the benchmark: warm-up, interleaved timed rounds, memory and machine facts.

A configuration is a `Runner`: a callable that does k steps and returns the images it processed.
Every runner is warmed up first (compilation, cuDNN autotuning and allocator growth stay out of
the figures), then timed in rounds that visit all runners of a group in turn, so a burst of load
from other processes hits every configuration alike; a figure is the median of its rounds. On
CUDA the clock is read only after `torch.cuda.synchronize`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Runner:
    """One measured configuration: `run(k)` does k steps (or k whole jobs) and returns images processed."""

    name: str
    run: Callable[[int], int]
    device: torch.device
    warmup: int = 2
    max_steps: int = 1000
    rewarm: int = 0  # untimed steps before each timed round (see `measure`)
    info: dict = field(default_factory=dict)


def sync(device: torch.device) -> None:
    """Wait for queued device work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(runner: Runner, steps: int) -> tuple[int, float]:
    """Run `steps` steps between two synchronised clock reads; return (images, seconds)."""
    sync(runner.device)
    t0 = time.perf_counter()
    images = runner.run(steps)
    sync(runner.device)
    return images, time.perf_counter() - t0


def peak_device_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocations since the last reset, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak(device: torch.device) -> None:
    """Start a new CUDA peak-memory window (the process RSS peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def warm_up(runner: Runner, round_s: float) -> dict:
    """Run the warm-up steps (the first timed alone, the last sizes the rounds); returns warm-up facts."""
    reset_peak(runner.device)
    _, first_s = timed(runner, 1)
    if runner.warmup > 2:
        timed(runner, runner.warmup - 2)
    step_s = timed(runner, 1)[1] if runner.warmup > 1 else first_s
    steps = max(1, min(runner.max_steps, math.ceil(round_s / max(step_s, 1e-6))))
    return {
        "first_step_s": first_s,
        "step_s": step_s,
        "steps_per_round": steps,
        "peak_mb": peak_device_mb(runner.device),
    }


def measure(runners: list[Runner], *, rounds: int, round_s: float, progress: Callable[[str], None]) -> dict[str, dict]:
    """Warm up every runner, then time them in interleaved rounds; img/s is the median over rounds."""
    facts = {}
    for r in runners:
        progress(f"warming up: {r.name}")
        facts[r.name] = warm_up(r, round_s)
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    for i in range(rounds):
        progress(f"timed round {i + 1}/{rounds} of {len(runners)} configurations")
        for r in runners[i % len(runners) :] + runners[: i % len(runners)]:  # rotate who goes first
            # Switching models leaves the first step after a switch slower (cold caches, fresh
            # allocations): measured ~6-10% on CPU. A real job never switches, so it is not timed.
            r.run(r.rewarm) if r.rewarm else None
            images, seconds = timed(r, facts[r.name]["steps_per_round"])
            rates[r.name].append(images / seconds)
    return {
        r.name: {
            **r.info,
            **facts[r.name],
            "img_per_s": statistics.median(rates[r.name]),
            "rounds_img_per_s": rates[r.name],
        }
        for r in runners
    }


class CpuBusy:
    """Context manager measuring the share of all cores this process kept busy (user + system time)."""

    def __enter__(self) -> "CpuBusy":
        self._r0, self._t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - self._t0
        cpu = (r1.ru_utime - self._r0.ru_utime) + (r1.ru_stime - self._r0.ru_stime)
        self.seconds, self.share = wall, cpu / (wall * (os.cpu_count() or 1)) if wall else 0.0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command_line() -> str:
    """How this process was started, as `python -m module args` when run as a module."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # A package run with -m has the spec of its __main__ submodule; the command names the package.
    head = (
        ["python", "-m", spec.name.removesuffix(".__main__")]
        if spec is not None and spec.name
        else [os.path.basename(sys.executable), sys.argv[0]]
    )
    return " ".join([*head, *sys.argv[1:]])


def machine_info(device: torch.device) -> dict:
    """Device name, library versions, core count, date and the command line."""
    import torchvision

    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
