"""The benchmark's summary: peak memory, notes, the table rows and the printed table."""

from __future__ import annotations

import torch

from mlcore.bench.config import NOTEBOOK, NOTEBOOK_DECODE, NOTEBOOK_PREDICT
from mlcore.bench.measure import peak_device_mb


def memory_figures(results: dict, device: torch.device) -> dict:
    """Peak memory of the run (per configuration on CUDA) and how it was read."""
    per = {name: r["peak_mb"] for group in ("train", "predict") for name, r in results[group].items()}
    if device.type == "cuda":
        return {
            "kind": "torch.cuda.max_memory_allocated during each configuration's warm-up "
            "(all models alive then included)",
            "peak_mb": max([*per.values(), peak_device_mb(device)]),
            "per_configuration_mb": per,
        }
    return {"kind": "peak RSS of the whole process (resource.getrusage)", "peak_mb": peak_device_mb(device)}


def summary_notes(results: dict, device: torch.device) -> list[str]:
    """What the figures leave out, and why a part was skipped."""
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
