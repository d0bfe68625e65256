"""Search spaces: which designs a search may propose (``search_spaces/NAME.toml``).

A space file (TOML, or YAML with the same keys)::

    description = "..."
    [exits]
    count = [0, 4]          # fewest and most exits (the final classifier is not counted)
    positions = "all"       # or block indices, e.g. [2, 5, 8, 11]
    heads = "all"           # or head types, e.g. ["linear", "conv"]
    [thresholds]
    levels = 51             # each threshold range is a grid of this many values
    [policies.max_softmax]
    threshold = [0.5, 1.0]  # exit when confidence >= t, t on the grid
    [policies.entropy]
    threshold = [0.0, 0.5]  # exit when normalised entropy <= t
    [policies.patience]
    patience = [2, 3]       # exit when the last p exits agree
    [sampler]
    population = 50         # NSGA-II population size (optional)

The policies listed are the ones searched: any registered policy
(:mod:`hapi_dse.cost.policies`), a threshold policy with a ``threshold`` range (default: its
``default_range``), ``patience`` with a ``patience`` range. Thresholds live on a grid so that
equal designs recur (the cost model caches them) and a small space can be swept exhaustively.

How a design is encoded for Optuna (a fixed set of parameters, which NSGA-II needs):
``policy`` (categorical, when several), ``patience`` (int, when searched) and, for each of
``max`` exit slots ``i``, ``exit{i}`` (``position_index * len(heads) + head_index`` over the
allowed positions and heads, or -1 = no exit; the first ``min`` slots always hold one) and
``q{i}`` (the threshold level, 0 = most permissive). Few parameters, integers rather than
categoricals: every parameter is one storage write (a database or journal round trip) and
Optuna compares integer distributions much faster. Slots are sorted by position; a slot
repeating a taken position moves to the next free one.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.cost.design import Design, Exit
from hapi_dse.cost.policies import ThresholdPolicy, get_policy, policy_names
from hapi_dse.errors import SettingError, UsageError, unknown_name
from hapi_dse.exit_stats import ExitStats
from hapi_dse.paths import SHIPPED_SEARCH_SPACES
from hapi_dse.readers import loads_toml, loads_yaml, read_text

_KEYS: dict[str, set[str]] = {
    "": {"description", "exits", "thresholds", "policies", "sampler"},
    "exits": {"count", "positions", "heads"},
    "thresholds": {"levels"},
    "sampler": {"population"},
}
#: the keys of a ``[policies.NAME]`` table: a threshold policy's range, or the patience range
_POLICY_KEYS = {True: {"threshold"}, False: {"patience"}}
_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file, not yet bound to a model (positions/heads may be "all")."""

    name: str
    description: str = ""
    min_exits: int = 0
    max_exits: int = 4
    positions: tuple[int, ...] | None = None  # None = every position of the model
    heads: tuple[str, ...] | None = None  # None = every head type of the model
    levels: int = 51
    thresholds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    patience: tuple[int, int] | None = None
    population: int | None = None
    path: Path | None = None

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(
            p
            for p in policy_names()
            if p in self.thresholds
            or (not get_policy(p).uses_threshold and self.patience is not None)
        )

    def grid(self, policy: str) -> list[float]:
        """Threshold values of ``policy`` ordered from most permissive to strictest."""
        rule = get_policy(policy)
        if not isinstance(rule, ThresholdPolicy):
            return [0.0]
        low, high = self.thresholds[policy]
        return list(_grid(low, high, self.levels, not rule.at_least))

    def bind(self, stats: ExitStats, model_id: str = "") -> BoundSpace:
        """Check the space against a model's exit columns; resolve "all"."""
        model = f"model {model_id}" if model_id else "the model"
        exits = [
            (int(p), str(h))
            for p, h in zip(stats.position.tolist(), stats.head.tolist(), strict=True)
            if h != "final"
        ]
        all_positions = sorted({p for p, _ in exits})
        all_heads = sorted({h for _, h in exits})
        positions = list(self.positions) if self.positions is not None else all_positions
        heads = list(self.heads) if self.heads is not None else all_heads
        bad = [p for p in positions if p not in all_positions]
        if bad:
            raise UsageError(
                f"{self.where}: exits.positions {bad} are not exit positions of {model}; "
                f"expected values in {_ranges(all_positions)}"
            )
        for h in heads:
            if h not in all_heads:
                e = unknown_name("head", h, all_heads)
                raise UsageError(f"{self.where}: exits.heads: {e} (the heads of {model})")
        have = set(exits)
        missing = [(p, h) for p in positions for h in heads if (p, h) not in have]
        if missing:
            raise UsageError(
                f"{self.where}: {model} has no {missing[0][1]!r} head at position "
                f"{missing[0][0]}; restrict exits.positions or exits.heads"
            )
        if self.max_exits > len(positions):
            raise UsageError(
                f"{self.where}: exits.count allows {self.max_exits} exits but only "
                f"{len(positions)} positions are allowed; lower the maximum"
            )
        return BoundSpace(self, tuple(sorted(positions)), tuple(heads))

    @property
    def where(self) -> str:
        return f"search space {self.name!r}" + (f" ({self.path})" if self.path else "")


@dataclass(frozen=True)
class BoundSpace:
    """A space with concrete positions and heads: encodes, decodes and enumerates designs."""

    space: SearchSpace
    positions: tuple[int, ...]
    heads: tuple[str, ...]

    def suggest(self, trial: Any) -> Design:
        """Ask an Optuna trial for one design (see the module docstring for the encoding)."""
        s = self.space
        params: dict[str, Any] = {}
        policies = s.policies
        if len(policies) > 1:
            params["policy"] = trial.suggest_categorical("policy", list(policies))
        if s.patience is not None and s.patience[0] < s.patience[1]:
            params["patience"] = trial.suggest_int("patience", *s.patience)
        last = len(self.positions) * len(self.heads) - 1
        for i in range(s.max_exits):
            params[f"exit{i}"] = trial.suggest_int(f"exit{i}", 0 if i < s.min_exits else -1, last)
            if s.levels > 1 and s.thresholds:
                params[f"q{i}"] = trial.suggest_int(f"q{i}", 0, s.levels - 1)
        return self.decode(params)

    def legend(self) -> dict[str, str]:
        """What each Optuna parameter means, for people browsing a study (see the module
        docstring); each trial's ``design`` user attribute holds its decoded design."""
        s = self.space
        slots = ", ".join(f"{p}:{h}" for p in self.positions for h in self.heads)
        out = {
            "exit{i}": f"exit slot i: -1 = none, else an index into [{slots}]",
            "q{i}": f"slot i's threshold level, 0..{s.levels - 1} (0 = most permissive)",
        }
        if len(s.policies) > 1:
            out["policy"] = "the exit policy"
        if s.patience is not None:
            out["patience"] = "exits that must agree (patience policy)"
        return out

    def decode(self, params: Mapping[str, Any]) -> Design:
        """The design a trial's parameters stand for."""
        s = self.space
        policy = str(params.get("policy", s.policies[0]))
        patience = int(params.get("patience", s.patience[0] if s.patience else 0))
        grid = s.grid(policy)
        taken: dict[int, Exit] = {}
        for i in range(s.max_exits):
            index = int(params.get(f"exit{i}", 0 if i < s.min_exits else -1))
            if index < 0:
                continue
            j, h = divmod(index, len(self.heads))
            while self.positions[j] in taken:  # repeated position: the next free one
                j = (j + 1) % len(self.positions)
            pos = self.positions[j]
            head = self.heads[h]
            q = min(int(params.get(f"q{i}", 0)), len(grid) - 1)
            taken[pos] = Exit(pos, head, grid[q])
        exits = tuple(taken[p] for p in sorted(taken))
        return Design(exits, policy, 0 if get_policy(policy).uses_threshold else patience)

    def size(self) -> int:
        """How many distinct designs the space holds."""
        s = self.space
        total = 0
        for policy in s.policies:
            per_exit = len(self.heads) * (len(s.grid(policy)))
            windowed = not get_policy(policy).uses_threshold
            variants = (s.patience[1] - s.patience[0] + 1) if windowed and s.patience else 1
            total += variants * sum(
                math.comb(len(self.positions), m) * per_exit**m
                for m in range(s.min_exits, s.max_exits + 1)
            )
        return total

    def enumerate(self) -> Iterator[Design]:
        """Every design of the space (for exhaustive sweeps of small spaces)."""
        s = self.space
        for policy in s.policies:
            grid = s.grid(policy)
            patiences = (
                range(s.patience[0], s.patience[1] + 1)
                if not get_policy(policy).uses_threshold and s.patience
                else [0]
            )
            for patience in patiences:
                for m in range(s.min_exits, s.max_exits + 1):
                    for pos in itertools.combinations(self.positions, m):
                        for heads in itertools.product(self.heads, repeat=m):
                            for ts in itertools.product(grid, repeat=m):
                                yield Design(
                                    tuple(
                                        itertools.starmap(Exit, zip(pos, heads, ts, strict=True))
                                    ),
                                    policy,
                                    patience,
                                )


@functools.lru_cache(maxsize=64)
def _grid(low: float, high: float, levels: int, descending: bool) -> tuple[float, ...]:
    """``levels`` evenly spaced thresholds from ``low`` to ``high`` (decoding a trial needs
    them: cached, as a search decodes several designs per trial)."""
    values = (
        [round(low + (high - low) * i / (levels - 1), 10) for i in range(levels)]
        if levels > 1
        else [low]
    )
    return tuple(values[::-1] if descending else values)


def _ranges(values: list[int]) -> str:
    return (
        f"{values[0]}..{values[-1]}"
        if values == list(range(values[0], values[-1] + 1))
        else ", ".join(map(str, values))
    )


def shipped_spaces() -> dict[str, Path]:
    """Search spaces found in ``./search_spaces`` and the installed copy, by name."""
    out: dict[str, Path] = {}
    for d in (SHIPPED_SEARCH_SPACES, Path("search_spaces")):
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.suffix in _SUFFIXES:
                    out[p.stem] = p
    return out


def load_space(name: str | Path) -> SearchSpace:
    """A space by name (``./search_spaces/NAME.toml``, then the installed copy) or path."""
    p = Path(name)
    if p.suffix in _SUFFIXES or len(p.parts) > 1:
        if not p.is_file():
            raise SettingError("space", f"{str(name)!r}: no such file")
        return parse_space(_read(p), name=p.stem, path=p)
    known = shipped_spaces()
    if str(name) not in known:
        raise unknown_name("search space", str(name), known)
    return parse_space(_read(known[str(name)]), name=str(name), path=known[str(name)])


def _read(path: Path) -> dict[str, Any]:
    """The space file's data through the guarded readers (one line for any parse failure,
    depth or integer limit)."""
    where = f"search space {path}"
    text = read_text(path, error=UsageError)
    if path.suffix == ".toml":
        return loads_toml(text, where, error=UsageError)
    data = loads_yaml(text, where, error=UsageError)
    if not isinstance(data, dict):
        raise UsageError(f"search space {path}: expected a mapping at the top level")
    return data


def parse_space(
    data: Mapping[str, Any], name: str = "custom", path: Path | None = None
) -> SearchSpace:
    """Validate a space's keys and values; every message names the key, value and fix."""
    where = f"search space {name!r}" + (f" ({path})" if path else "")

    def fail(msg: str) -> UsageError:
        return UsageError(f"{where}: {msg}")

    def check_keys(section: Any, allowed: set[str], prefix: str) -> None:
        if not isinstance(section, Mapping):
            where_ = f"[{prefix.strip('[]')}]" if prefix else "the top level"
            raise fail(
                f"{where_} must be a table of {', '.join(sorted(allowed))}, but got {section!r}"
            )
        for key in section:
            if key not in allowed:
                e = unknown_name(f"key in {prefix or 'the top level'}", str(key), allowed)
                raise fail(str(e))

    def pair(value: Any, key: str, kind: type) -> tuple[Any, Any]:
        types = (int, float) if kind is float else (int,)
        ok = (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(
                isinstance(v, types) and not isinstance(v, bool) and math.isfinite(v) for v in value
            )
        )
        if not ok or value[0] > value[1]:
            example = "[0.5, 1.0]" if kind is float else "[1, 4]"
            raise fail(
                f"{key} must be [LOW, HIGH] with LOW <= HIGH, e.g. {key} = {example}, "
                f"but got {value!r}"
            )
        return (kind(value[0]), kind(value[1]))

    check_keys(data, _KEYS[""], "")
    exits = data.get("exits", {})
    check_keys(exits, _KEYS["exits"], "[exits]")
    lo, hi = pair(exits.get("count", [0, 4]), "exits.count", int)
    if lo < 0 or hi < 1:
        raise fail(f"exits.count must be [MIN, MAX] with MIN >= 0 and MAX >= 1, but got {[lo, hi]}")
    positions = exits.get("positions", "all")
    if positions != "all" and (
        not (
            isinstance(positions, list)
            and positions
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in positions)
        )
        or len(set(positions)) != len(positions)
    ):
        raise fail(
            f'exits.positions must be "all" or distinct block indices >= 0, e.g. '
            f"[2, 5, 8], but got {positions!r}"
        )
    heads = exits.get("heads", "all")
    if heads != "all" and not (
        isinstance(heads, list) and heads and all(isinstance(h, str) for h in heads)
    ):
        raise fail(
            f'exits.heads must be "all" or a list of head types, e.g. '
            f'["linear", "conv"], but got {heads!r}'
        )
    thresholds = data.get("thresholds", {})
    check_keys(thresholds, _KEYS["thresholds"], "[thresholds]")
    levels = thresholds.get("levels", 51)
    if not isinstance(levels, int) or isinstance(levels, bool) or not 1 <= levels <= 10_000:
        raise fail(f"thresholds.levels must be an integer 1..10000, but got {levels!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail(f"description must be a string, but got {description!r}")
    policies = data.get("policies", {"max_softmax": {"threshold": [0.5, 1.0]}})
    if not isinstance(policies, Mapping) or not policies:
        raise fail("[policies] must name at least one of " + ", ".join(policy_names()))
    ranges: dict[str, tuple[float, float]] = {}
    patience: tuple[int, int] | None = None
    for pol, spec in policies.items():
        if pol not in policy_names():
            raise fail(str(unknown_name("policy in [policies]", str(pol), policy_names())))
        rule = get_policy(pol)
        spec = {} if spec is None else spec
        check_keys(spec, _POLICY_KEYS[rule.uses_threshold], f"[policies.{pol}]")
        if not isinstance(rule, ThresholdPolicy):
            patience = pair(spec.get("patience", [2, 3]), "policies.patience.patience", int)
            if patience[0] < 1:
                raise fail(f"policies.patience.patience must be >= 1, but got {list(patience)}")
            if patience[1] > hi:
                raise fail(
                    f"policies.patience.patience {list(patience)} allows a window of "
                    f"{patience[1]} exits, but exits.count allows at most {hi}: such an exit "
                    f"could never fire; lower the patience to at most {hi} or raise the count"
                )
        else:
            default = list(rule.default_range)
            t = pair(spec.get("threshold", default), f"policies.{pol}.threshold", float)
            if t[0] < 0 or t[1] > 1:
                raise fail(f"policies.{pol}.threshold must lie within [0, 1], but got {list(t)}")
            ranges[pol] = t
    sampler = data.get("sampler", {})
    check_keys(sampler, _KEYS["sampler"], "[sampler]")
    population = sampler.get("population")
    if population is not None and (
        not isinstance(population, int) or isinstance(population, bool) or population < 2
    ):
        raise fail(f"sampler.population must be an integer >= 2, but got {population!r}")
    return SearchSpace(
        name=name,
        description=description,
        min_exits=lo,
        max_exits=hi,
        positions=None if positions == "all" else tuple(sorted(positions)),
        heads=None if heads == "all" else tuple(heads),
        levels=levels,
        thresholds=ranges,
        patience=patience,
        population=population,
        path=path,
    )
