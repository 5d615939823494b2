"""The in-process commands of `dataslayer`: demo-data, train, predict, promote, models, bench, demo.

Each command validates its parameters into the job's pydantic model before any work, shows
progress bars on stderr, and prints a one-line JSON summary as its last line on stdout. Bad input
exits with status 2 and a one-line error naming the flag; other failures exit with status 1.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import typing
from pathlib import Path

import click

from mlcore.errors import USER_ERRORS, ParamsError
from mlcore.names import CHAMPION, DEFAULT_MODEL_NAME, Tag
from mlcore.params import PRESETS, PredictParams, TrainParams, build, train_params

# Flags whose names differ from their fields.
FLAG_NAMES = {"data_dir": "data", "model_uri": "model", "output": "out"}


def flag(field: str) -> str:
    """The command-line flag of a params field."""
    return "--" + FLAG_NAMES.get(field, field).replace("_", "-")


def emit(summary: dict) -> None:
    """Print the one-line JSON summary (always the last line of output)."""
    click.echo(json.dumps(summary, default=str, sort_keys=False))


def handle_errors(fn):
    """Turn expected failures into a one-line error and a non-zero exit status."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParamsError as exc:
            click.echo(f"error: {flag(exc.field)}: {exc.message}", err=True)
            sys.exit(2)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:  # an MLflow or runtime error: one line, not a trace
            if type(exc).__name__ in ("MlflowException", "RestException"):
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
            raise

    return wrapper


def params_options(model: type, skip: tuple[str, ...] = ()):
    """Click options for every field of a params model (values stay unset unless given)."""

    def decorate(fn):
        for name, field in reversed(list(model.model_fields.items())):
            if name in skip:
                continue
            opt = flag(name)
            help_text = (
                f"{field.description} [default: {field.default}]"
                if field.default is not None or name != "data_dir"
                else field.description
            )
            ann = field.annotation
            if ann is bool:
                fn = click.option(f"{opt}/--no-{opt[2:]}", name, default=None, help=help_text)(fn)
            elif typing.get_origin(ann) is typing.Literal:
                fn = click.option(opt, name, type=click.Choice(typing.get_args(ann)), default=None, help=help_text)(fn)
            else:
                fn = click.option(opt, name, type=str, default=None, help=help_text)(fn)
        return fn

    return decorate


class ProgressBars:
    """Draws a job's progress events as tqdm bars on stderr."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm, self.bar, self.key = tqdm, None, None

    def __call__(self, event: dict) -> None:
        phase = event["phase"]
        fold = f"fold {event['fold'] + 1}/{event['folds']} " if "fold" in event else ""
        if phase in ("decoding", "predicting"):
            self._bar(phase, event["total"], phase).n = event["done"]
        elif phase == "training":
            bar = self._bar(
                ("train", event.get("fold"), event["epoch"]),
                event["steps"],
                f"{fold}epoch {event['epoch']}/{event['epochs']}",
            )
            bar.n = event["step"]
            bar.set_postfix_str(f"{event['img_per_s']:.0f} img/s", refresh=False)
        elif phase == "epoch_end":
            self.tqdm.write(
                f"{fold}epoch {event['epoch']}/{event['epochs']}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in event["metrics"].items()),
                file=sys.stderr,
            )
        if self.bar is not None:
            self.bar.refresh()

    def _bar(self, key, total, desc):
        if key != self.key:
            self.close()
            # Counts are set from events, not stepped, so tqdm's own rate would be wrong: leave it out.
            self.bar = self.tqdm(
                total=total,
                desc=desc,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
            )
            self.key = key
        return self.bar

    def close(self) -> None:
        """Close the open bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dataslayer")
def cli():
    """Fall detection for the Dataslayer competition, in-process commands (`dataslayer` adds queue and stack)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


@cli.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--subjects", default=6, show_default=True, help="number of subjects (people)")
@click.option("--images-per-class", default=40, show_default=True, help="images per subject and class")
@click.option("--test-images", default=40, show_default=True, help="images in the flat test folder")
@click.option("--seed", default=0, show_default=True, help="random seed (same seed, same bytes)")
@click.option("--overwrite", is_flag=True, help="replace an existing dataset in OUT")
@handle_errors
def demo_data(out, subjects, images_per_class, test_images, seed, overwrite):
    """Generate a synthetic dataset in the competition's layout (OUT/train, OUT/test, OUT/test_labels.csv)."""
    from mlcore.demo_data import generate_demo_dataset

    try:
        summary = generate_demo_dataset(
            out,
            subjects=subjects,
            images_per_class=images_per_class,
            test_images=test_images,
            seed=seed,
            overwrite=overwrite,
        )
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    emit(summary)


@cli.command()
@click.option(
    "--preset", type=click.Choice(list(PRESETS)), default=None, help="start from a preset: seed = the notebook exactly"
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write a checkpoint every epoch here and resume from it",
)
@params_options(TrainParams)
@handle_errors
def train(preset, checkpoint_dir, **values):
    """Train a model, log everything to MLflow and register the best epoch's model.

    With --cv-folds K: K folds of whole subjects trained one after another as child runs, and one
    registered model, the fold ensemble, its threshold tuned on the out-of-fold predictions.
    """
    params = train_params(preset, **values)  # bad flags are refused before torch and MLflow are imported

    from mlcore.cache import default_cache_dir
    from mlcore.hooks import JobHooks
    from mlcore.runname import run_label
    from mlcore.split import check_folds
    from mlcore.tracking import MlflowTracker
    from mlcore.train import run_training

    check_folds(params)  # a fold count the subjects cannot fill is refused before a run exists
    bars = ProgressBars()
    try:
        with MlflowTracker(
            experiment=params.experiment_name,
            run_name=run_label(params.model_dump()),
            tags={Tag.JOB_TYPE: "train", Tag.PRESET: preset or ""},
        ) as tracker:
            summary = run_training(
                params,
                tracker=tracker,
                hooks=JobHooks(progress=bars),
                checkpoint_dir=checkpoint_dir,
                cache_dir=default_cache_dir(),
            )
    finally:
        bars.close()
    emit(summary)


@cli.command()
@params_options(PredictParams)
@handle_errors
def predict(**values):
    """Predict a test folder with a registered model and write submission.csv (id,label)."""
    params = build(PredictParams, {k: v for k, v in values.items() if v is not None})

    from mlcore.cache import default_cache_dir
    from mlcore.hooks import JobHooks
    from mlcore.predict import run_prediction
    from mlcore.registry import Registry
    from mlcore.tracking import MlflowTracker

    model, info = Registry().load(params.model_uri)
    bars = ProgressBars()
    tags = {
        Tag.JOB_TYPE: "predict",
        Tag.MODEL_URI: params.model_uri,
        Tag.MODEL_NAME: str(info["name"]),
        Tag.MODEL_VERSION: str(info["version"]),
    }
    try:
        with MlflowTracker(experiment=params.experiment_name, tags=tags) as tracker:
            summary = run_prediction(
                params, model, info, tracker=tracker, hooks=JobHooks(progress=bars), cache_dir=default_cache_dir()
            )
    finally:
        bars.close()
    emit(summary)


@cli.command()
@click.option("--model", "name", default=DEFAULT_MODEL_NAME, show_default=True, help="registered model name")
@click.option("--version", required=True, help="version to promote")
@click.option("--alias", default=CHAMPION, show_default=True, help="alias to point at the version")
@handle_errors
def promote(name, version, alias):
    """Point an alias (champion by default) at a registered model version."""
    from mlcore.registry import Registry

    emit(Registry().promote(name, version, alias))


@cli.command()
@click.option("--model", "name", default=DEFAULT_MODEL_NAME, show_default=True, help="registered model name")
@handle_errors
def models(name):
    """List the versions of a registered model with aliases, validation F1 and threshold."""
    from mlcore.registry import Registry

    rows = Registry().versions(name)
    for r in rows:
        threshold = f"{float(r['threshold']):.4f}" if r["threshold"] else "-"
        click.echo(
            f"v{r['version']:<4} {','.join(r['aliases']) or '-':<12} val_f1 {r['val_f1'] or '-':<10} "
            f"threshold {threshold:<10} {r['arch'] or '-'}@{r['image_size'] or '-'}px "
            + (f"ensemble of {r['cv_folds']} folds " if r.get("cv_folds") else "")
            + f"run {r['run_id']}"
        )
    emit(
        {
            "model_name": name,
            "versions": len(rows),
            "champion": next((r["version"] for r in rows if CHAMPION in r["aliases"]), None),
        }
    )


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def bench(ctx):
    """Benchmark the notebook's pipeline and the engine side by side (`dataslayer bench --help` for options)."""
    from mlcore.bench import main as bench_main

    sys.exit(bench_main(ctx.args))


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), default="demo")
@click.option("--epochs", default=8, show_default=True, help="epochs of the quick preset")
@handle_errors
def demo(out, epochs):
    """Generate demo data, train the quick preset, promote it, predict the test set and score it."""
    import os

    from mlcore.cache import default_cache_dir
    from mlcore.demo_data import generate_demo_dataset
    from mlcore.hooks import JobHooks
    from mlcore.mlflow_ui import experiments_url
    from mlcore.predict import run_prediction
    from mlcore.registry import Registry
    from mlcore.tracking import MlflowTracker
    from mlcore.train import run_training

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    os.chdir(out)  # local artifacts (./mlruns) land beside the database
    if not (out / "train").is_dir():
        click.echo(f"generating demo data in {out} ...", err=True)
        generate_demo_dataset(out)
    bars = ProgressBars()
    try:
        params = train_params("quick", data_dir=str(out), epochs=epochs)
        with MlflowTracker(
            experiment=params.experiment_name,
            run_name="demo-quick",
            tags={Tag.JOB_TYPE: "train", Tag.PRESET: "quick"},
        ) as tracker:
            trained = run_training(
                params, tracker=tracker, hooks=JobHooks(progress=bars), cache_dir=default_cache_dir()
            )
        registry = Registry()
        registry.promote(params.registered_model_name, trained["model_version"])
        pred = build(
            PredictParams,
            {
                "data_dir": str(out),
                "model_uri": f"models:/{params.registered_model_name}@{CHAMPION}",
                "output": str(out / "submission.csv"),
            },
        )
        model, info = registry.load(pred.model_uri)
        with MlflowTracker(
            experiment=pred.experiment_name,
            run_name="demo-submission",
            tags={Tag.JOB_TYPE: "predict", Tag.MODEL_VERSION: info["version"]},
        ) as tracker:
            predicted = run_prediction(
                pred, model, info, tracker=tracker, hooks=JobHooks(progress=bars), cache_dir=default_cache_dir()
            )
    finally:
        bars.close()
    test_f1 = _score_against(out / "test_labels.csv", Path(predicted["submission"]))
    click.echo(
        f"\nsubmission: {predicted['submission']} ({predicted['rows']} rows), validation F1 {trained['val_f1']:.3f}, "
        f"test F1 {test_f1:.3f} against {out / 'test_labels.csv'}\n"
        f"MLflow UI:  {Path(sys.executable).parent / 'mlflow'} ui "
        f"--backend-store-uri {os.environ['MLFLOW_TRACKING_URI']} --port 5001"
        f"  then open {experiments_url('http://127.0.0.1:5001')}",
        err=True,
    )
    emit(
        {
            **{k: trained[k] for k in ("run_id", "model_version", "val_f1_weighted", "val_f1", "threshold")},
            "submission": predicted["submission"],
            "rows": predicted["rows"],
            "test_f1": round(test_f1, 6),
        }
    )


def _score_against(answers: Path, submission: Path) -> float:
    """Binary F1 of a submission against an answers CSV (id,label)."""
    import pandas as pd
    from sklearn.metrics import f1_score

    merged = pd.read_csv(answers).merge(pd.read_csv(submission), on="id", suffixes=("_true", "_pred"))
    return float(f1_score(merged["label_true"], merged["label_pred"]))


def main() -> None:
    """`python -m mlcore`: the in-process commands (the console script `dataslayer` is worker.cli:main)."""
    cli(prog_name="dataslayer")


if __name__ == "__main__":
    main()
