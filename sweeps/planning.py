"""Trials of a search space: every combination (grid) or ``n_trials`` draws from a seeded generator (random).

A search space maps hyperparameter names of the trainer's schema to either a list of values
(both strategies) or, for random search, a range ``{"min": a, "max": b, "log": false}`` of an
integer or number parameter. The same space and seed always give the same trials, in order.
"""

import itertools
import math
import random
from typing import Any

from jobs import hyperparameters

MAX_TRIALS = 200


class PlanInvalid(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _check_space(schema: dict, space: Any, strategy: str) -> None:
    if not isinstance(space, dict) or not space:
        raise PlanInvalid("search_space", "must be a non-empty object of hyperparameter → values or range")
    for name, spec in space.items():
        if name not in schema:
            raise PlanInvalid("search_space", f"{name!r} is not a hyperparameter of this trainer")
        if isinstance(spec, list):
            if not spec:
                raise PlanInvalid("search_space", f"{name}: give at least one value")
            continue
        if not isinstance(spec, dict) or set(spec) - {"min", "max", "log"} or not {"min", "max"} <= set(spec):
            raise PlanInvalid("search_space", f"{name}: a list of values, or {{'min', 'max', 'log'?}}")
        if strategy == "grid":
            raise PlanInvalid("search_space", f"{name}: a grid needs a list of values, not a range")
        if schema[name]["type"] not in ("integer", "number"):
            raise PlanInvalid("search_space", f"{name}: ranges apply to integer and number parameters")
        low, high = spec["min"], spec["max"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise PlanInvalid("search_space", f"{name}: min and max must be numbers with min ≤ max")
        if spec.get("log") and low <= 0:
            raise PlanInvalid("search_space", f"{name}: a log range needs min > 0")


def _draw(rng: random.Random, kind: str, spec) -> Any:
    if isinstance(spec, list):
        return spec[rng.randrange(len(spec))]
    low, high = spec["min"], spec["max"]
    if spec.get("log"):
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return round(value) if kind == "integer" else float(f"{value:.6g}")


def plan_trials(*, schema: dict, strategy: str, space: Any, seed: int | None, n_trials: int | None) -> list[dict]:
    """The trials' hyperparameters (only the searched ones; the rest keep their defaults), each checked
    against the schema; PlanInvalid names the field and the reason."""
    if strategy not in ("grid", "random"):
        raise PlanInvalid("strategy", "must be grid or random")
    _check_space(schema, space, strategy)
    names = sorted(space)
    if strategy == "grid":
        trials = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    else:
        if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
            raise PlanInvalid("n_trials", "random search needs n_trials ≥ 1")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise PlanInvalid("seed", "random search needs an integer seed (the same seed gives the same trials)")
        rng = random.Random(seed)
        trials = [{name: _draw(rng, schema[name]["type"], space[name]) for name in names} for _ in range(n_trials)]
    if len(trials) > MAX_TRIALS:
        raise PlanInvalid("search_space", f"{len(trials)} trials; at most {MAX_TRIALS} per sweep")
    for index, trial in enumerate(trials):
        _, errors = hyperparameters.validate(schema, trial)
        if errors:
            field, messages = next(iter(errors.items()))
            raise PlanInvalid("search_space", f"trial {index + 1}: {field}: {messages[0]}")
    return trials
