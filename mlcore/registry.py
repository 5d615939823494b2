"""The model registry: versions, aliases, promotion, and loading a model without running anything in it.

A registered version is whatever its artifact holds, and anyone who can write to the registry can
register one, so loading never imports or unpickles artifact content: the MLmodel file must describe
this project's own format (the pytorch flavor, no `code` folder, only the files `log_model` writes),
and only the state dict is read, with `torch.load(weights_only=True)`, into a model built from the
version's `arch` tag. A cross-validation's fold ensemble is the same artifact whose state dict holds
K such models (`members.0.` ... `members.K-1.`), K from its `cv_folds` tag: it is checked and loaded
the same way, into a `FoldEnsemble` of K models of `arch`. MLflow calls go through `mlcore.tracking`
(the one module importing mlflow).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import yaml

from mlcore import tracking
from mlcore.names import CHAMPION, SELECTION_METRIC, Tag

STATE_DICT_FILE = "extra_files/state_dict.pt"
# What `MlflowTracker.log_model` writes (pt2 program + state dict); any other file is refused.
MODEL_FILES = frozenset(
    {
        "MLmodel",
        "conda.yaml",
        "python_env.yaml",
        "requirements.txt",
        "input_example.json",
        "serving_input_example.json",
        "data/model.pt2",
        STATE_DICT_FILE,
    }
)
MAX_MODEL_BYTES = 2 * 2**30  # per model: a ResNet50 state dict is ~95 MB
MAX_FOLDS = 1000  # TrainParams.cv_folds' bound


class UnsafeModel(LookupError):
    """A model artifact that is not in the project's own format; the message names the version and the problem."""


class Registry:
    """One registered-model store (the tracking server's registry)."""

    def __init__(self, tracking_uri: str | None = None):
        self.client = tracking.mlflow_client(tracking_uri)

    # -- reading ---------------------------------------------------------------------------------
    def resolve(self, uri: str):
        """The version behind models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest."""
        ref = uri.removeprefix("models:/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
            return self.client.get_model_version_by_alias(name, alias)
        name, _, version = ref.partition("/")
        if version in ("", "latest"):
            found = self.client.search_model_versions(f"name='{name}'")
            if not found:
                raise LookupError(f"registered model {name!r} has no versions")
            return max(found, key=lambda v: int(v.version))
        return self.client.get_model_version(name, version)

    def versions(self, name: str) -> list[dict]:
        """Versions with aliases, validation F1, threshold and source run, newest first."""
        aliases: dict[str, list[str]] = {}
        for alias, version in self.client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        rows = []
        for mv in sorted(self.client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
            rows.append(
                {
                    "version": str(mv.version),
                    "aliases": sorted(aliases.get(str(mv.version), [])),
                    "val_f1": mv.tags.get("val_f1"),
                    "val_f1_weighted": mv.tags.get(SELECTION_METRIC),
                    "threshold": mv.tags.get("threshold"),
                    "arch": mv.tags.get("arch"),
                    "image_size": mv.tags.get("image_size"),
                    "cv_folds": mv.tags.get("cv_folds"),  # a fold ensemble of this many models; None: one model
                    "run_id": mv.run_id,
                    "created": mv.creation_timestamp,
                }
            )
        return rows

    def names(self, limit: int = 100) -> list[str]:
        """Every registered model's name, sorted."""
        return sorted(m.name for m in self.client.search_registered_models(max_results=limit))

    def alias_version(self, name: str, alias: str = CHAMPION):
        """The version holding `alias`, or None."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except Exception as exc:  # noqa: BLE001 - MLflow raises for a missing alias or model
            if tracking.is_not_found(exc) or "alias" in str(exc).lower():
                return None
            raise

    # -- promotion ---------------------------------------------------------------------------------
    def promote(self, name: str, version: str | int, alias: str = CHAMPION) -> dict:
        """Point `alias` at a version (registry aliases; stages are deprecated)."""
        previous = self.alias_version(name, alias)
        self.client.get_model_version(name, str(version))  # raises with a clear message when it does not exist
        self.client.set_registered_model_alias(name, alias, str(version))
        return {
            "model_name": name,
            "alias": alias,
            "model_version": str(version),
            "previous_version": previous.version if previous is not None else None,
        }

    def promote_if_better(self, name: str, version: str | int, alias: str = CHAMPION) -> dict:
        """Promote `version` if its val_f1_weighted beats the alias holder's (a missing score never wins)."""
        ours = _score(self.client.get_model_version(name, str(version)), missing=math.nan)
        champion = self.alias_version(name, alias)
        theirs = _score(champion, missing=-math.inf) if champion is not None else -math.inf
        if ours > theirs:
            self.client.set_registered_model_alias(name, alias, str(version))
            return {"promoted": True, "model_version": str(version), "previous": champion.version if champion else None}
        return {"promoted": False, "reason": f"{SELECTION_METRIC} {ours:.4f} does not beat the {alias}'s {theirs:.4f}"}

    # -- loading -----------------------------------------------------------------------------------
    def load(self, uri: str):
        """A model for prediction: (nn.Module on CPU in eval mode, info: arch, image_size, threshold, name, version).

        `threshold` is None when the source (a runs:/ URI) carries no tuned threshold.
        """
        import torch

        from mlcore.model import build_ensemble, build_model

        if uri.startswith("runs:/"):
            run = self.client.get_run(uri.split("/")[1])
            if "arch" not in run.data.params or "image_size" not in run.data.params:
                raise LookupError(f"run {run.info.run_id} was not trained by dataslayer (no arch/image_size params)")
            threshold = run.data.tags.get(Tag.THRESHOLD)
            info = {
                "arch": run.data.params["arch"],
                "image_size": run.data.params["image_size"],
                "threshold": threshold,
                # a cross-validation's parent run holds the ensemble; a fold's run (cv_fold set) holds no model
                "cv_folds": run.data.params.get("cv_folds") if not run.data.params.get("cv_fold") else None,
                "precision": None,  # a run carries no version tag: the job's own precision
                "name": None,
                "version": None,
            }
            where, load_uri = f"run {run.info.run_id}", uri
        else:
            mv = self.resolve(uri)
            missing = [k for k in ("arch", "image_size", "threshold") if k not in mv.tags]
            if missing:
                raise UnsafeModel(
                    f"model version {mv.name}/{mv.version} lacks the tags {missing}; "
                    "it was not registered by dataslayer"
                )
            info = {
                "arch": mv.tags["arch"],
                "image_size": mv.tags["image_size"],
                "threshold": mv.tags["threshold"],
                "precision": mv.tags.get("precision"),  # None: registered before the tag existed
                "cv_folds": mv.tags.get("cv_folds"),  # a fold ensemble of this many models
                "name": mv.name,
                "version": str(mv.version),
            }
            where, load_uri = f"model version {mv.name}/{mv.version}", f"models:/{mv.name}/{mv.version}"
        folds = _fold_count(info.get("cv_folds"), where)
        info["cv_folds"] = folds
        model = build_model(info["arch"], "none") if folds is None else build_ensemble(info["arch"], folds)
        with tempfile.TemporaryDirectory(prefix="dataslayer-model-") as tmp:
            state_file = self._checked_state_dict(load_uri, where, Path(tmp), models=folds or 1)
            try:
                state = torch.load(state_file, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except Exception as exc:  # a pickle payload, another architecture's tensors, a damaged file
                raise UnsafeModel(f"{where}: its state dict was refused: {str(exc).splitlines()[0][:300]}") from None
        info["image_size"] = int(info["image_size"])
        info["threshold"] = float(info["threshold"]) if info["threshold"] not in (None, "") else None
        return model.eval(), info

    def _checked_state_dict(self, uri: str, where: str, tmp: Path, models: int = 1) -> Path:
        """Check the artifact's file list and MLmodel, download only the state dict; UnsafeModel names what is wrong."""
        files = tracking.model_artifact_files(uri)
        unexpected = sorted(set(files) - MODEL_FILES)
        if unexpected:
            raise UnsafeModel(
                f"{where}: refusing a model artifact with unexpected files {unexpected[:5]} "
                "(only what dataslayer's log_model writes is loaded)"
            )
        for needed in ("MLmodel", STATE_DICT_FILE):
            if needed not in files:
                raise UnsafeModel(
                    f"{where}: the model artifact has no {needed} (registered by an older dataslayer "
                    "or another tool; train it again)"
                )
        if files[STATE_DICT_FILE] > MAX_MODEL_BYTES * models:
            raise UnsafeModel(
                f"{where}: the state dict is {files[STATE_DICT_FILE]} bytes, more than {models} ResNet(s) can be"
            )
        mlmodel = tracking.download_model_file(uri, "MLmodel", tmp)
        try:
            meta = yaml.safe_load(mlmodel.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UnsafeModel(f"{where}: its MLmodel file is not valid YAML ({exc})") from None
        flavor = (meta or {}).get("flavors", {}).get("pytorch") if isinstance(meta, dict) else None
        if not isinstance(flavor, dict):
            raise UnsafeModel(f"{where}: its MLmodel file has no pytorch flavor")
        if flavor.get("code"):
            raise UnsafeModel(
                f"{where}: its MLmodel file names a code folder ({flavor['code']!r}); code is never loaded"
            )
        if flavor.get("model_data") != "data":
            raise UnsafeModel(f"{where}: unexpected model_data {flavor.get('model_data')!r} in its MLmodel file")
        return tracking.download_model_file(uri, STATE_DICT_FILE, tmp)


def _fold_count(value, where: str) -> int | None:
    """The number of models in a fold ensemble from its `cv_folds` tag (None or empty: a single model)."""
    if value in (None, ""):
        return None
    try:
        folds = int(value)
    except (TypeError, ValueError):
        folds = 0
    if not 2 <= folds <= MAX_FOLDS:
        raise UnsafeModel(f"{where}: its cv_folds tag {value!r} is not a fold count (2 to {MAX_FOLDS})")
    return folds


def _score(version, missing: float) -> float:
    """A version's val_f1_weighted tag, or `missing`."""
    try:
        return float(version.tags[SELECTION_METRIC])
    except (KeyError, ValueError):
        return missing
