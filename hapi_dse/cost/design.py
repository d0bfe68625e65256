"""A design: which exits to deploy, with which thresholds, under which exit policy.

The ``design.json`` written by ``hapi search`` and read by ``hapi export`` / ``hapi eval``
holds ``policy``, ``policy_params`` and ``exits`` in exactly the shape of
:meth:`Design.to_dict`. The final classifier is always deployed and never listed.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hapi_dse.cost.policies import get_policy, policy_names
from hapi_dse.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exit:
    """One deployed exit: the head ``head`` after block ``position``, with its threshold.

    ``threshold`` is a confidence floor for ``max_softmax``, an entropy ceiling for
    ``entropy`` (what a threshold policy compares its score with) and unused (0.0) for
    ``patience``.
    """

    position: int
    head: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "head": self.head, "threshold": self.threshold}


@dataclass(frozen=True)
class Design:
    """Exits in strictly increasing position, an exit policy and its parameters.

    ``policy`` names a registered policy (:mod:`hapi_dse.cost.policies`); ``patience`` is the
    parameter of the structural policy (``patience``), 0 under a threshold policy.
    """

    exits: tuple[Exit, ...]
    policy: str = "max_softmax"
    patience: int = 0
    _key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        windowed = not get_policy(self.policy).uses_threshold
        positions = [e.position for e in self.exits]
        if any(b <= a for a, b in itertools.pairwise(positions)):
            raise UsageError(
                f"exit positions must strictly increase, but got {positions}; "
                "list each position once, in order"
            )
        if windowed and self.patience < 1:
            raise UsageError(f"patience must be >= 1, but got {self.patience}")
        key = (
            self.policy,
            self.patience if windowed else 0,
            tuple((e.position, e.head, e.threshold) for e in self.exits),
        )
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> tuple[Any, ...]:
        """A hashable identity: equal designs have equal keys (used to cache evaluations)."""
        return self._key

    @property
    def policy_params(self) -> dict[str, int]:
        return {} if get_policy(self.policy).uses_threshold else {"patience": self.patience}

    def compact(self, *, digits: int | None = None) -> str:
        """``"2:conv@0.91;7:linear@0.85"``; a policy without thresholds (patience) shows none.

        Thresholds are written at full precision (the shortest text that reads back as the
        same float), so :meth:`from_compact` rebuilds this design exactly, as ``trials.csv``
        and ``pareto.csv`` need; ``digits`` rounds them to that many significant digits, for
        display only.
        """
        if not get_policy(self.policy).uses_threshold:
            return ";".join(f"{e.position}:{e.head}" for e in self.exits)

        def threshold(t: float) -> str:
            return repr(float(t)) if digits is None else f"{t:.{digits}g}"

        return ";".join(f"{e.position}:{e.head}@{threshold(e.threshold)}" for e in self.exits)

    @classmethod
    def from_compact(cls, text: str, policy: str = "max_softmax", patience: int = 0) -> Design:
        """The inverse of :meth:`compact`: ``"2:conv@0.91;7:linear@0.85"`` under ``policy``.

        Patience designs list ``POSITION:HEAD`` items (no thresholds); the empty string is the
        plain backbone with no exits.
        """
        thresholds = get_policy(policy).uses_threshold
        form = "POSITION:HEAD@THRESHOLD" if thresholds else "POSITION:HEAD"
        example = "2:conv@0.91;7:linear@0.85" if thresholds else "2:conv;7:linear"
        exits = []
        for item in text.split(";") if text.strip() else []:
            exit_ = _parse_exit(item.strip(), thresholds)
            if exit_ is None:
                raise UsageError(
                    f"exits {text!r}: {item.strip()!r} is not {form} ({policy} policy); write "
                    f"each exit as {form}, joined by ';', e.g. {example!r}, or '' for no exits"
                )
            exits.append(exit_)
        return cls(exits=tuple(exits), policy=policy, patience=patience)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "policy_params": self.policy_params,
            "exits": [e.to_dict() for e in self.exits],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Design:
        """Read the ``policy`` / ``policy_params`` / ``exits`` keys of a ``design.json``.

        Types and ranges are checked: ``policy`` a registered policy, ``policy_params`` an
        object, ``patience`` an integer >= 1 (patience policy), ``exits`` a list of
        ``{position: int >= 0, head: str, threshold: number in 0..1}``. A patience larger
        than the number of exits is allowed (the searches make such designs: no exit can
        fire) but logged as a warning.
        """
        form = (
            "expected policy, policy_params and exits = [{position, head, threshold}, ...], "
            'e.g. {"policy": "max_softmax", "exits": [{"position": 2, "head": "conv", '
            '"threshold": 0.9}]}'
        )

        def fail(msg: str) -> UsageError:
            return UsageError(f"malformed design: {msg}; {form}")

        if not isinstance(data, Mapping):
            raise fail(f"expected a JSON object, got {type(data).__name__}")
        policy = data.get("policy", "max_softmax")
        if not isinstance(policy, str):
            raise fail(f"policy is {policy!r}, expected one of {', '.join(policy_names())}")
        params = data.get("policy_params") or {}
        if not isinstance(params, Mapping):
            raise fail(f"policy_params is {params!r}, expected an object such as {{}}")
        patience = params.get("patience", 0)
        if not _is_int(patience) or patience < 0:
            raise fail(f"policy_params.patience is {patience!r}, expected an integer >= 1")
        raw = data.get("exits")
        if not isinstance(raw, list):
            raise fail(f"exits is {raw!r}, expected a list (possibly empty)")
        exits = []
        for i, e in enumerate(raw):
            if not isinstance(e, Mapping):
                raise fail(f"exits[{i}] is {e!r}, expected an object")
            pos, head = e.get("position"), e.get("head")
            thr = e.get("threshold", 0.0)
            if not _is_int(pos) or pos < 0:
                raise fail(f"exits[{i}].position is {pos!r}, expected a block index >= 0")
            if not isinstance(head, str) or not head:
                raise fail(f"exits[{i}].head is {head!r}, expected a head type such as 'conv'")
            if (
                isinstance(thr, bool)
                or not isinstance(thr, int | float)
                or not math.isfinite(thr)
                or not 0.0 <= thr <= 1.0
            ):
                raise fail(
                    f"exits[{i}].threshold is {thr!r}, expected a number in 0..1 (a confidence "
                    "floor for max_softmax, an entropy ceiling for entropy)"
                )
            exits.append(Exit(int(pos), head, float(thr)))
        design = cls(exits=tuple(exits), policy=policy, patience=int(patience))
        if not get_policy(policy).uses_threshold and exits and patience > len(exits):
            log.warning(
                "design: patience %d is more than its %d exit(s), so no exit can fire: it runs "
                "as the plain backbone plus its heads",
                patience,
                len(exits),
            )
        return design


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


_EXIT = re.compile(
    r"([0-9]+):([^\s:;@]+)(?:@([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?))?"
)


def _parse_exit(item: str, with_threshold: bool) -> Exit | None:
    """``POSITION:HEAD@THRESHOLD`` (or ``POSITION:HEAD``) as an :class:`Exit`; None if not."""
    m = _EXIT.fullmatch(item)
    if m is None or (m[3] is not None) != with_threshold:
        return None
    threshold = float(m[3]) if with_threshold else 0.0
    return Exit(int(m[1]), m[2], threshold) if math.isfinite(threshold) else None
