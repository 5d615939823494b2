"""Hyperparameter sweeps: grid (lists of values per field) or random search (ranges, N samples, a seed).

A sweep is validated whole at submission: every child's TrainParams is built before anything is
created, so a bad value is refused with the field named and nothing is queued.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlcore.errors import ParamsError
from mlcore.params import TrainParams, build

MAX_CHILDREN = 256
MAX_FIELDS = 12  # fields one sweep may vary
MAX_VALUES = MAX_CHILDREN  # values one field may list (a longer list cannot fit the cap anyway)
STRATEGIES = ("grid", "random")
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
    strategy: Literal[STRATEGIES] = Field("grid", description="grid: every combination; random: `samples` draws")
    grid: dict[str, Annotated[list[Any], Field(max_length=MAX_VALUES)]] = Field(
        default_factory=dict, max_length=MAX_FIELDS, description="field -> values (grid), or choices (random)"
    )
    ranges: dict[str, Range] = Field(
        default_factory=dict, max_length=MAX_FIELDS, description="field -> numeric range (random only)"
    )
    samples: int = Field(8, ge=1, le=MAX_CHILDREN, description="random search: number of children")
    seed: int = Field(0, ge=0, description="random search: seed of the draws")
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

    @model_validator(mode="after")
    def _shape(self) -> SweepParams:
        if self.strategy == "grid" and self.ranges:
            raise ValueError("ranges need strategy 'random'")
        if not self.grid and not self.ranges:
            raise ValueError("nothing to sweep: give lists (grid) or ranges (random)")
        if set(self.grid) & set(self.ranges):
            raise ValueError(f"{sorted(set(self.grid) & set(self.ranges))} given both as a list and a range")
        if len(self.grid) + len(self.ranges) > MAX_FIELDS:
            raise ValueError(f"a sweep may vary at most {MAX_FIELDS} fields")
        return self

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
        else:
            rng = random.Random(self.seed)
            integer = {k for k in self.ranges if TrainParams.model_fields[k].annotation in (int, int | None)}
            combos = [
                {
                    **{k: rng.choice(v) for k, v in self.grid.items()},
                    **{k: r.sample(rng, k in integer) for k, r in self.ranges.items()},
                }
                for _ in range(self.samples)
            ]
        return combos

    def children(self) -> list[TrainParams]:
        """Every child's validated TrainParams; an invalid value names its field and child."""
        out = []
        for i, combo in enumerate(self.combinations()):
            try:
                out.append(build(TrainParams, {**self.base, **combo}))
            except ParamsError as exc:
                where = "grid" if exc.field in self.grid else "ranges" if exc.field in self.ranges else "base"
                field = f"{where}.{exc.field}" if where != "base" else exc.field
                errors = [{**e, "field": field if e["field"] == exc.field else e["field"]} for e in exc.errors]
                raise ParamsError(field, f"{exc.message} (run {i + 1}: {combo})", errors) from None
        return out


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
