"""Hyperparameter sweeps: grid (lists of values per field), random search (ranges, N samples, a seed) or TPE.

A grid or random sweep is validated whole at submission: every child's TrainParams is built before
anything is created, so a bad value is refused with the field named and nothing is queued. A TPE
sweep's children are proposed one at a time as slots free up (worker/tpe.py), so at submission its
search space is checked instead: every categorical choice and both ends of every range are built
into a TrainParams, and a range TPE cannot sample (a range on a non-numeric field, an integer range
holding no integer, a log range on integers below 1) is refused naming `ranges.FIELD`.

Every strategy may prune (`pruner`: none, median, asha; worker/pruning.py): a trial is judged on
its per-epoch `objective` after each epoch past `pruning_warmup_epochs`. The objective is one of
the validation metrics every training run logs per epoch (OBJECTIVES); the sweep's best child is
the unpruned finished child with the best value of it over its epochs.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlcore.errors import ParamsError
from mlcore.names import SELECTION_METRIC
from mlcore.params import TrainParams, build
from mlcore.runname import child_label, clean_name

MAX_CHILDREN = 256
MAX_FIELDS = 12  # fields one sweep may vary
MAX_VALUES = MAX_CHILDREN  # values one field may list (a longer list cannot fit the cap anyway)
STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "asha")
# The validation metrics every training run logs per epoch (mlcore.metrics.epoch_metrics and the loss);
# val_roc_auc is left out: it is not logged when the validation split holds one class only.
OBJECTIVES = ("val_f1_weighted", "val_f1", "val_accuracy", "val_precision", "val_recall", "val_loss")
MINIMIZED = ("val_loss",)
RERUN_OF = "dataslayer.rerun_of"  # on a re-run child: the run id of the child it repeats (worker/rerun.py)
NOT_SWEEPABLE = {"data_dir", "experiment_name", "registered_model_name", "device"}
SWEEPABLE = tuple(f for f in TrainParams.model_fields if f not in NOT_SWEEPABLE)


class Range(BaseModel):
    """A numeric range for random search; `log` samples uniformly in log space."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def sample(self, rng: random.Random, integer: bool) -> float | int:
        """Draw one value."""
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if integer else float(f"{value:.6g}")


class SweepParams(BaseModel):
    """A sweep: shared training values plus what varies, how many run at once, and whether to promote."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    base: dict[str, Any] = Field(description="TrainParams values every child shares (data_dir at least)")
    name: str | None = Field(
        None, description="the sweep's run name (default: strategy, what varies and the number of runs)"
    )
    strategy: Literal[STRATEGIES] = Field(
        "grid", description="grid: every combination; random: `samples` draws; tpe: `samples` trials proposed by TPE"
    )
    grid: dict[str, Annotated[list[Any], Field(max_length=MAX_VALUES)]] = Field(
        default_factory=dict, max_length=MAX_FIELDS, description="field -> values (grid), or choices (random, tpe)"
    )
    ranges: dict[str, Range] = Field(
        default_factory=dict, max_length=MAX_FIELDS, description="field -> numeric range (random, tpe)"
    )
    samples: int = Field(8, ge=1, le=MAX_CHILDREN, description="random search and tpe: number of children (trials)")
    seed: int = Field(0, ge=0, description="random search and tpe: seed of the draws")
    objective: str = Field(
        SELECTION_METRIC, description=f"the validation metric trials are compared on: {', '.join(OBJECTIVES)}"
    )
    pruner: Literal[PRUNERS] = Field(
        "none", description="stop unpromising trials early: median (below the median of finished trials) or asha"
    )
    pruning_warmup_epochs: int = Field(1, ge=0, le=1000, description="epochs a trial always runs before it is judged")
    max_concurrent: int = Field(2, ge=1, le=64, description="children running at the same time")
    promote_best: bool = Field(False, description="promote the best child to champion if it beats the current one")

    @field_validator("grid", "ranges")
    @classmethod
    def _sweepable(cls, v: dict) -> dict:
        for name, values in v.items():
            if name not in SWEEPABLE:
                raise ValueError(f"{name!r} cannot be swept; choose from {', '.join(SWEEPABLE)}")
            if isinstance(values, list) and not values:
                raise ValueError(f"{name!r} has no values")
        return v

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str | None:
        return clean_name(v)

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str) -> str:
        if v not in OBJECTIVES:
            raise ValueError(f"{v!r} is not a validation metric every run logs; choose from {', '.join(OBJECTIVES)}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> SweepParams:
        if self.strategy == "grid" and self.ranges:
            raise ValueError("ranges need strategy 'random' or 'tpe'")
        if not self.grid and not self.ranges:
            raise ValueError("nothing to sweep: give lists (grid) or ranges (random)")
        if set(self.grid) & set(self.ranges):
            raise ValueError(f"{sorted(set(self.grid) & set(self.ranges))} given both as a list and a range")
        if len(self.grid) + len(self.ranges) > MAX_FIELDS:
            raise ValueError(f"a sweep may vary at most {MAX_FIELDS} fields")
        return self

    @property
    def maximize(self) -> bool:
        """Whether a larger objective is better."""
        return self.objective not in MINIMIZED

    def integer_fields(self) -> set[str]:
        """The ranged fields that take integers."""
        return {k for k in self.ranges if TrainParams.model_fields[k].annotation in (int, int | None)}

    def size(self) -> int:
        """How many children the sweep makes, computed without building them."""
        if self.strategy == "grid":
            return math.prod(len(v) for v in self.grid.values())
        return self.samples

    def check_size(self) -> int:
        """The number of children; over the cap, ParamsError naming the field (milliseconds, whatever the lists)."""
        n = self.size()
        if n > MAX_CHILDREN:
            sizes = " x ".join(f"{len(v)} {k}" for k, v in self.grid.items())
            raise ParamsError("grid", f"{sizes} make {n:,} runs, more than the {MAX_CHILDREN} a sweep may have")
        return n

    def combinations(self) -> list[dict[str, Any]]:
        """The varying values of each child, in a stable order."""
        self.check_size()  # before any combination is built: a product of long lists is astronomically large
        if self.strategy == "grid":
            keys = list(self.grid)
            combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        elif self.strategy == "tpe":
            raise ValueError("a TPE sweep's children are proposed one by one as trials end (worker/tpe.py)")
        else:
            rng = random.Random(self.seed)
            integer = self.integer_fields()
            combos = [
                {
                    **{k: rng.choice(v) for k, v in self.grid.items()},
                    **{k: r.sample(rng, k in integer) for k, r in self.ranges.items()},
                }
                for _ in range(self.samples)
            ]
        return combos

    def child(self, combo: dict[str, Any], label: str) -> TrainParams:
        """One child's validated TrainParams; an invalid value names its field (grid.F, ranges.F or F) and `label`."""
        try:
            return build(TrainParams, {**self.base, **combo})
        except ParamsError as exc:
            where = "grid" if exc.field in self.grid else "ranges" if exc.field in self.ranges else "base"
            field = f"{where}.{exc.field}" if where != "base" else exc.field
            errors = [{**e, "field": field if e["field"] == exc.field else e["field"]} for e in exc.errors]
            raise ParamsError(field, f"{exc.message} ({label}: {combo})", errors) from None

    def varied(self) -> list[str]:
        """The fields the sweep varies: its lists, then its ranges."""
        return [*self.grid, *self.ranges]

    def child_name(self, index: int, params: TrainParams) -> str:
        """A child's run name: its number and the values it tries, e.g. `#3 lr1e-3 bs16` (mlcore/runname.py)."""
        return child_label(index, params.model_dump(), self.varied())

    def children(self) -> list[TrainParams]:
        """Every child's validated TrainParams; an invalid value names its field and child."""
        return [self.child(combo, f"run {i + 1}") for i, combo in enumerate(self.combinations())]

    def check(self) -> int:
        """Validate everything the sweep will run and return its number of children (ParamsError names the field).

        Grid and random: every child is built. TPE: the search space (`check_space`). Then the pruner's needs.
        """
        if self.strategy == "tpe":
            n = self.check_space()
            epochs = self._epochs_bounds()
        else:
            children = self.children()
            n, epochs = len(children), [c.epochs for c in children]
        if self.pruner != "none":
            most = max(epochs)
            if most <= 1:
                raise ParamsError(
                    "pruner", "a one-epoch trial has nothing left to prune: use pruner 'none' or more epochs"
                )
            if most < self.pruning_warmup_epochs + 2:
                raise ParamsError(
                    "pruning_warmup_epochs",
                    f"trials of at most {most} epochs are never judged after {self.pruning_warmup_epochs} warm-up "
                    f"epochs (a trial is judged after epochs warm-up+1 .. epochs-1): lower it or raise epochs",
                )
        return n

    def check_space(self) -> int:
        """TPE: each choice and both ends of each range make a valid child, and TPE can sample each range."""
        self.check_size()
        integer = self.integer_fields()
        numeric = (int, float, int | None, float | None)
        for key, r in self.ranges.items():
            if TrainParams.model_fields[key].annotation not in numeric:
                raise ParamsError(f"ranges.{key}", "TPE samples numbers only: give this field's choices as a list")
            if key in integer:
                low, high = math.ceil(r.low), math.floor(r.high)
                if low > high:
                    raise ParamsError(f"ranges.{key}", f"an integer field: [{r.low}, {r.high}] holds no integer")
                if r.log and low < 1:
                    raise ParamsError(f"ranges.{key}", "a log range of integers needs low >= 1")
                ends = [low, high]
            else:
                ends = [r.low, r.high]
            for end in ends:
                self.child({key: end}, "range end")
        for key, choices in self.grid.items():
            for choice in choices:
                if not isinstance(choice, (str, int, float, bool, type(None))):
                    raise ParamsError(f"grid.{key}", "TPE choices must be strings, numbers, booleans or null")
                self.child({key: choice}, "choice")
        if not self.grid and not self.ranges:
            raise ParamsError("ranges", "nothing to search")
        return self.samples

    def _epochs_bounds(self) -> list[int]:
        if "epochs" in self.ranges:
            return [math.floor(self.ranges["epochs"].high)]
        if "epochs" in self.grid:
            return [int(v) for v in self.grid["epochs"]]
        return [self.child({}, "base").epochs]


def check_shape(grid: Any, ranges: Any) -> None:
    """The sweep's shape limits (fields varied, values per list), checked before any value is: milliseconds whatever
    the request, ParamsError naming the field."""
    grid = grid if isinstance(grid, dict) else {}
    ranges = ranges if isinstance(ranges, dict) else {}
    if len(grid) + len(ranges) > MAX_FIELDS:
        field = "ranges" if len(ranges) > MAX_FIELDS else "grid"
        raise ParamsError(field, f"a sweep may vary at most {MAX_FIELDS} fields (got {len(grid) + len(ranges)})")
    for key, values in grid.items():
        if isinstance(values, list) and len(values) > MAX_VALUES:
            raise ParamsError(f"grid.{key}", f"at most {MAX_VALUES} values (got {len(values)})")


def sweep_params(values: dict[str, Any]) -> SweepParams:
    """Validate a sweep into SweepParams, raising ParamsError naming the field."""
    return build(SweepParams, values)
