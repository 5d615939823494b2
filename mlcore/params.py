"""Validated parameters, one pydantic model per job type.

Every entrance (CLI, Celery task, web form, JSON API) builds one of these before any work starts,
so a bad value is refused once, with the field named, and the same object is logged as the run's
params. Defaults are the notebook's hyperparameters; presets bundle common settings.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mlcore.errors import ParamsError
from mlcore.names import (
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    MODEL_NAME_RE,
    PREDICTION_EXPERIMENT,
    SELECTION_METRIC,
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    def to_log(self) -> dict[str, str]:
        """Flat string params as logged to MLflow."""
        return {k: "" if v is None else str(v) for k, v in self.model_dump(mode="json").items()}


def _existing_dir(value: Path, inner: str) -> Path:
    """Resolve a directory; a dataset root that holds `inner/` resolves to that folder."""
    path = Path(value).expanduser()
    if "\x00" in str(path):
        raise ValueError("path contains a NUL byte")
    if not path.is_dir():
        raise ValueError(f"no such directory: {path}")
    path = path.resolve()
    if (path / inner).is_dir():
        return path / inner
    return path


def _check_device(v: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return v


Device = Annotated[str, AfterValidator(_check_device)]
Precision = Literal["auto", "bf16", "fp32"]


class TrainParams(_Params):
    """Everything one training job needs; defaults reproduce the notebook's hyperparameters."""

    data_dir: Path = Field(
        description="training images: subject folders with fall/non_fall inside, or a dataset root holding train/"
    )
    epochs: int = Field(20, ge=1, le=1000, description="passes over the training set")
    batch_size: int = Field(16, ge=1, le=4096, description="training images per optimiser step")
    learning_rate: float = Field(2e-5, gt=0, le=1.0, description="peak learning rate of Adam")
    image_size: int = Field(224, ge=16, le=1024, description="images are resized to image_size x image_size pixels")
    arch: Literal["resnet18", "resnet34", "resnet50"] = Field(
        "resnet50", description="torchvision ResNet with a 2-class head"
    )
    pretrained: str = Field("imagenet", description="initial weights: imagenet, none, or a local .pth/.pt file")
    split: Literal["subject", "image"] = Field(
        "subject", description="validation split: whole subjects (no leakage) or random images (the notebook)"
    )
    val_fraction: float = Field(0.2, ge=0.05, le=0.5, description="share of images held out for validation")
    seed: int = Field(
        42, ge=0, le=2**31 - 1, description="seed for the split, initialisation, shuffling and augmentation"
    )
    precision: Precision = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    cv_folds: int | None = Field(
        None,
        ge=2,
        le=1000,
        description="cross-validation: K folds of whole subjects, K child runs and one fold-ensemble model "
        "(K = number of subjects: leave-one-subject-out; off: one split)",
    )
    cv_fold: int | None = Field(
        None, ge=0, le=999, description="train only this fold (0 to cv_folds-1) of the cross-validation, as one run"
    )
    threshold_metric: Literal["f1", "accuracy"] = Field(
        "f1", description="validation metric the decision threshold is tuned for (f1: the notebook's)"
    )
    aug_flip: bool = Field(True, description="random horizontal flip, p=0.5")
    aug_rotation: float = Field(10.0, ge=0, le=180, description="random rotation range in degrees (0 = off)")
    aug_brightness: float = Field(0.2, ge=0, le=1, description="colour jitter brightness strength (0 = off)")
    aug_contrast: float = Field(0.2, ge=0, le=1, description="colour jitter contrast strength (0 = off)")
    aug_saturation: float = Field(0.2, ge=0, le=1, description="colour jitter saturation strength (0 = off)")
    aug_hue: float = Field(0.1, ge=0, le=0.5, description="colour jitter hue strength (0 = off)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="decoupled weight decay (AdamW); 0 is the notebook's Adam")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="constant (the notebook) or cosine decay per step"
    )
    warmup_epochs: float = Field(0.0, ge=0, le=100, description="linear learning-rate warm-up, in epochs")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=1000, description=f"stop after this many epochs without a better {SELECTION_METRIC}"
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile: auto = on for long CUDA jobs, off on CPU"
    )
    eval_batch_size: int = Field(
        256, ge=1, le=8192, description="images per evaluation batch (does not change results)"
    )
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    experiment_name: str = Field(DEFAULT_EXPERIMENT, min_length=1, max_length=200, description="MLflow experiment")
    registered_model_name: str = Field(DEFAULT_MODEL_NAME, description="registered model that receives the best model")

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: Path) -> Path:
        return _existing_dir(v, "train")

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, v: str) -> str:
        if v in ("imagenet", "none"):
            return v
        path = Path(v).expanduser()
        if "\x00" in v or not path.is_file():
            raise ValueError(f"expected imagenet, none or an existing weights file; no such file: {v}")
        return str(path.resolve())

    @field_validator("registered_model_name")
    @classmethod
    def _model_name(cls, v: str) -> str:
        if not MODEL_NAME_RE.match(v):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 100)")
        return v

    @field_validator("cv_folds")
    @classmethod
    def _folds_by_subject(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("split") == "image":
            raise ValueError("cross-validation folds are whole subjects: use split 'subject' (not 'image')")
        return v

    @field_validator("cv_fold")
    @classmethod
    def _fold_in_range(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is None:
            return v
        folds = info.data.get("cv_folds")
        if folds is None:
            raise ValueError("needs cv_folds (the number of folds it is one of)")
        if v >= folds:
            raise ValueError(f"must be below cv_folds ({folds}): folds are numbered 0 to {folds - 1}")
        return v

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_fits(cls, v: float, info: ValidationInfo) -> float:
        epochs = info.data.get("epochs")
        if epochs is not None and v > epochs:
            raise ValueError(f"must not exceed epochs ({epochs})")
        return v


# Presets fill in values the caller did not give. `seed` is the notebook exactly.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(
        epochs=20,
        batch_size=16,
        learning_rate=2e-5,
        image_size=224,
        arch="resnet50",
        pretrained="imagenet",
        split="image",
        val_fraction=0.2,
        seed=42,
        precision="fp32",
        compile="off",
        aug_flip=True,
        aug_rotation=10.0,
        aug_brightness=0.2,
        aug_contrast=0.2,
        aug_saturation=0.2,
        aug_hue=0.1,
        weight_decay=0.0,
        lr_schedule="constant",
        warmup_epochs=0.0,
        early_stopping_patience=None,
    ),
    # A from-scratch ResNet18 at 64 px: a few CPU minutes on the demo data.
    "quick": dict(
        epochs=8,
        batch_size=32,
        learning_rate=1e-3,
        image_size=64,
        arch="resnet18",
        pretrained="none",
        lr_schedule="cosine",
        warmup_epochs=1.0,
    ),
    # Large batches for a GPU; the learning rate is scaled linearly from the notebook's 2e-5 at
    # batch 16 (x16) with warm-up and cosine decay, bf16 and torch.compile.
    "throughput": dict(
        batch_size=256,
        learning_rate=3.2e-4,
        lr_schedule="cosine",
        warmup_epochs=2.0,
        precision="auto",
        compile="auto",
    ),
}


def train_params(preset: str | None = None, **values: Any) -> TrainParams:
    """Build TrainParams from a preset plus explicit values (explicit values win)."""
    if preset is not None and preset not in PRESETS:
        raise ParamsError("preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    merged = {**PRESETS.get(preset or "", {}), **{k: v for k, v in values.items() if v is not None}}
    return build(TrainParams, merged)


class PredictParams(_Params):
    """Everything one prediction job needs."""

    data_dir: Path = Field(description="flat folder of test images, or a dataset root holding test/")
    model_uri: str = Field(
        f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}",
        description="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH",
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="decision threshold; default: the model version's tuned threshold"
    )
    output: Path = Field(Path("submission.csv"), description="where submission.csv is written")
    batch_size: int = Field(256, ge=1, le=8192, description="images per inference batch")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Precision = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    experiment_name: str = Field(
        PREDICTION_EXPERIMENT, min_length=1, max_length=200, description="MLflow experiment of the prediction run"
    )

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: Path) -> Path:
        return _existing_dir(v, "test")

    @field_validator("model_uri")
    @classmethod
    def _model_uri(cls, v: str) -> str:
        name = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
        if ".." in v or not re.fullmatch(
            rf"models:/{name}(@[A-Za-z0-9_-]+|/\d+|/latest)?|runs:/[0-9a-f]{{32}}/{name}(/{name})*", v
        ):
            raise ValueError("expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH")
        return v

    @field_validator("output")
    @classmethod
    def _output(cls, v: Path) -> Path:
        if "\x00" in str(v) or v.is_dir():
            raise ValueError(f"not a writable file path: {v}")
        return v


def describe_errors(exc: ValidationError) -> list[dict]:
    """Flatten a pydantic error into [{field, message}] with the field's name."""
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "params"
        msg = err["msg"].removeprefix("Value error, ")
        out.append({"field": field, "message": msg})
    return out


_ADAPTERS: dict[tuple[type, str], TypeAdapter] = {}


def check_types(model: type[BaseModel], values: dict[str, Any], where: str = "") -> None:
    """Refuse values of the wrong JSON type (strict: "1" or true is not a number, 1 is not a boolean), naming the field.

    For requests from JSON, before `build`: the models themselves coerce, which forms need (every
    form value is a string). Unknown fields are left to the model, which refuses them by name.
    """
    for key, value in values.items():
        field = model.model_fields.get(key)
        if field is None or field.annotation in (Path, Path | None):
            continue
        adapter = _ADAPTERS.get((model, key))
        if adapter is None:
            adapter = _ADAPTERS[(model, key)] = TypeAdapter(field.annotation)
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ParamsError(where + key, f"{message} (got {type(value).__name__} {value!r:.60})") from None


def build(model: type[_Params], values: dict[str, Any]) -> Any:
    """Validate values into `model`, raising ParamsError naming the first bad field."""
    for key, val in values.items():
        if isinstance(val, float) and math.isnan(val):
            raise ParamsError(key, "must be a number, not NaN")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = describe_errors(exc)
        raise ParamsError(errors[0]["field"], errors[0]["message"], errors) from None
