"""New run and new sweep: forms generated from the parameter models; views validate and enqueue."""

from __future__ import annotations

import uuid

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, url_for

from mlcore.errors import ParamsError
from mlcore.names import PRIORITIES
from mlcore.params import PRESETS
from webui import datasets, lastqueued, sweepform
from webui.errors import QUEUE_DOWN, TRACKING_DOWN
from webui.jobqueue import checked_run_id, jobs, queue_available
from webui.paramforms import field_errors, grouped, initial_values, parse_form, train_specs
from webui.queueing import count_sweep, queue_sweep, queue_train, sweep_values
from worker.errors import QueueUnavailable, TrackingUnavailable

bp = Blueprint("runs", __name__)
EXTRA_INPUTS = {"dataset", "priority", "name", "idempotency_key"}


def _common(typed: dict, errors: dict, general: list, token: str, **extra) -> dict:
    return {
        "groups": grouped(train_specs()),
        "values": typed,
        "errors": errors,
        "general": general,
        "token": token,
        "datasets": datasets.find_datasets("train"),
        "presets": list(PRESETS),
        "config_presets": PRESETS,
        "priorities": PRIORITIES,
        "data_root": datasets.data_root(),
        "queue_ok": queue_available(),
        **extra,
    }


def _rerun_values(run_id: str) -> tuple[dict, str | None]:
    """A finished job's parameters, to run it again with changes."""
    job = jobs().job(checked_run_id(run_id), with_progress=False)
    return dict(job.params), datasets.name_of(job.params.get("data_dir"))


def _model() -> dict:
    return {"registered_model_name": current_app.config["MODEL_NAME"]}  # the Models page shows this one


def _blank_run() -> dict:
    """The run form's inputs with nothing chosen."""
    return {**initial_values(train_specs(), None, _model()), "dataset": "", "priority": "normal", "name": ""}


def _recalled(form: str, blank: dict) -> dict | None:
    """What this form page just queued (the browser's Back fetches it again), else None."""
    return lastqueued.recall(form, blank, request.args)


def _fresh_url() -> str:
    """This page without what it recalled."""
    return url_for(request.endpoint, **request.args, fresh=1)


def _fresh(form: str):
    """`?fresh=1` ("Start from the defaults"): forget what was queued and show the page without it."""
    lastqueued.forget(form)
    args = {k: v for k, v in request.args.items() if k != "fresh"}
    return redirect(url_for(request.endpoint, **args))


@bp.route("/runs/new", methods=["GET", "POST"])
def new_run():
    """The training form; POST queues one job and opens its page."""
    specs = train_specs()
    if request.method == "GET":
        if "fresh" in request.args:
            return _fresh("run")
        if last := _recalled("run", _blank_run()):
            context = _common(last["values"], {}, [], uuid.uuid4().hex, preset=last["preset"])
            return render_template("runs/new.html", just_queued=last["run_id"], fresh_url=_fresh_url(), **context)
        preset = request.args.get("preset") if request.args.get("preset") in PRESETS else None
        overrides, dataset = _rerun_values(request.args["from"]) if request.args.get("from") else ({}, None)
        typed = initial_values(specs, preset, {**_model(), **overrides})
        typed.update(dataset=request.args.get("dataset") or dataset or "", priority="normal", name="")
        return render_template("runs/new.html", **_common(typed, {}, [], uuid.uuid4().hex, preset=preset))
    values, typed = parse_form(specs, request.form)
    typed.update({k: request.form.get(k, "") for k in ("dataset", "priority", "name")})
    token = request.form.get("idempotency_key") or ""
    preset = request.form.get("preset") if request.form.get("preset") in PRESETS else None
    lastqueued.forget_if_changed("run", typed, _blank_run())
    try:
        run_id = queue_train(
            values,
            request.form.get("dataset"),
            priority=request.form.get("priority", "normal"),
            user=g.user,
            token=token,
            name=request.form.get("name"),
        )
    except ParamsError as exc:
        errors, general = field_errors(exc.errors, set(specs) | EXTRA_INPUTS)
        return render_template("runs/new.html", **_common(typed, errors, general, token, preset=preset)), 400
    except (QueueUnavailable, TrackingUnavailable) as exc:
        banner = QUEUE_DOWN if isinstance(exc, QueueUnavailable) else TRACKING_DOWN
        return render_template("runs/new.html", **_common(typed, {}, [banner], token, preset=preset)), 503
    lastqueued.remember("run", typed, _blank_run(), run_id, request.args, preset)
    flash("Training job queued.", "success")
    return redirect(url_for("jobs.detail", run_id=run_id))


def _sweep_context(typed: dict, errors: dict, general: list, token: str) -> dict:
    return _common(
        typed,
        errors,
        general,
        token,
        rows=sweepform.row_specs(),
        settings=sweepform.setting_specs(),
        shared_open=any(k in train_specs() for k in errors),
    )


def _sweep_from_form():
    values, typed = parse_form(train_specs(), request.form)
    spec, sweep_typed = sweepform.parse(request.form)
    typed.update(sweep_typed)
    typed.update({k: request.form.get(k, "") for k in ("dataset", "priority", "name")})
    return values, {**spec, "name": request.form.get("name") or None}, typed


def _blank_sweep() -> dict:
    """The sweep form's inputs with nothing chosen."""
    typed = initial_values(train_specs(), None, _model())
    return {**typed, **sweepform.initial(), "dataset": "", "priority": "normal", "name": ""}


def _sweep_errors(exc: ParamsError) -> tuple[dict, list]:
    # A child's error names its field in the child (`learning_rate`); exc.field says where it came from
    # (`grid.learning_rate`).
    errors = (
        exc.errors
        if exc.errors and exc.errors[0]["field"] == exc.field
        else [{"field": exc.field, "message": exc.message}]
    )
    mapped = [{**e, "field": sweepform.error_key(e["field"])} for e in errors]
    known = set(train_specs()) | EXTRA_INPUTS | {f"row.{s.name}" for s in sweepform.row_specs()}
    known |= {sweepform.PREFIX + n for n in sweepform.SETTINGS}
    return field_errors(mapped, known)


@bp.route("/sweeps/new", methods=["GET", "POST"])
def new_sweep():
    """The sweep form; POST queues the sweep (a parent run and its children) and opens its page."""
    if request.method == "GET":
        if "fresh" in request.args:
            return _fresh("sweep")
        if last := _recalled("sweep", _blank_sweep()):
            context = _sweep_context(last["values"], {}, [], uuid.uuid4().hex)
            return render_template(
                "runs/sweep.html", just_queued=last["run_id"], fresh_url=_fresh_url(), preset=last["preset"], **context
            )
        preset = request.args.get("preset") if request.args.get("preset") in PRESETS else None
        typed = initial_values(train_specs(), preset, _model())
        typed.update(sweepform.initial(), dataset=request.args.get("dataset", ""), priority="normal", name="")
        return render_template("runs/sweep.html", preset=preset, **_sweep_context(typed, {}, [], uuid.uuid4().hex))
    base, spec, typed = _sweep_from_form()
    token = request.form.get("idempotency_key") or ""
    lastqueued.forget_if_changed("sweep", typed, _blank_sweep())
    try:
        values = sweep_values(base, request.form.get("dataset"), spec)
        run_id = queue_sweep(values, priority=request.form.get("priority", "normal"), user=g.user, token=token)
    except ParamsError as exc:
        errors, general = _sweep_errors(exc)
        return render_template("runs/sweep.html", **_sweep_context(typed, errors, general, token)), 400
    except (QueueUnavailable, TrackingUnavailable) as exc:
        banner = QUEUE_DOWN if isinstance(exc, QueueUnavailable) else TRACKING_DOWN
        return render_template("runs/sweep.html", **_sweep_context(typed, {}, [banner], token)), 503
    preset = request.args.get("preset") if request.args.get("preset") in PRESETS else None
    lastqueued.remember("sweep", typed, _blank_sweep(), run_id, request.args, preset)
    flash("Sweep queued.", "success")
    return redirect(url_for("jobs.detail", run_id=run_id))


@bp.route("/sweeps/preview", methods=["POST"])
def preview_sweep():
    """How many runs the sweep form makes right now (every child validated), or the first problem."""
    base, spec, _ = _sweep_from_form()
    try:
        runs = count_sweep(sweep_values(base, request.form.get("dataset"), spec))
    except ParamsError as exc:
        errors, general = _sweep_errors(exc)
        field, message = next(iter(errors.items()), ("", general[0] if general else str(exc)))
        return jsonify(ok=False, field=field, error=message)
    return jsonify(ok=True, runs=runs)


@bp.route("/datasets")
def dataset_list():
    """The datasets found under the data root, with images per class and subject."""
    return render_template("runs/datasets.html", datasets=datasets.find_datasets(), data_root=datasets.data_root())
