"""A design: which exits to deploy, with which thresholds, under which exit policy.

The ``design.json`` written by ``hapi search`` and read by ``hapi export`` / ``hapi eval``
holds ``policy``, ``policy_params`` and ``exits`` in exactly the shape of
:meth:`Design.to_dict`. The final classifier is always deployed and never listed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hapi_dse.errors import UsageError

POLICIES = ("max_softmax", "entropy", "patience")


@dataclass(frozen=True)
class Exit:
    """One deployed exit: the head ``head`` after block ``position``, with its threshold.

    ``threshold`` is a confidence floor for ``max_softmax``, an entropy ceiling for
    ``entropy`` and unused (0.0) for ``patience``.
    """

    position: int
    head: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "head": self.head, "threshold": self.threshold}


@dataclass(frozen=True)
class Design:
    """Exits in strictly increasing position, an exit policy and its parameters."""

    exits: tuple[Exit, ...]
    policy: str = "max_softmax"
    patience: int = 0
    _key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            from hapi_dse.errors import unknown_name

            raise unknown_name("exit policy", self.policy, POLICIES)
        positions = [e.position for e in self.exits]
        if any(b <= a for a, b in itertools.pairwise(positions)):
            raise UsageError(
                f"exit positions must strictly increase, but got {positions}; "
                "list each position once, in order"
            )
        if self.policy == "patience" and self.patience < 1:
            raise UsageError(f"patience must be >= 1, but got {self.patience}")
        key = (
            self.policy,
            self.patience if self.policy == "patience" else 0,
            tuple((e.position, e.head, e.threshold) for e in self.exits),
        )
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> tuple[Any, ...]:
        """A hashable identity: equal designs have equal keys (used to cache evaluations)."""
        return self._key

    @property
    def policy_params(self) -> dict[str, int]:
        return {"patience": self.patience} if self.policy == "patience" else {}

    def compact(self) -> str:
        """``"2:conv@0.91;7:linear@0.85"``; the patience policy shows no thresholds."""
        if self.policy == "patience":
            return ";".join(f"{e.position}:{e.head}" for e in self.exits)
        return ";".join(f"{e.position}:{e.head}@{e.threshold:.4g}" for e in self.exits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "policy_params": self.policy_params,
            "exits": [e.to_dict() for e in self.exits],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Design:
        """Read the ``policy`` / ``policy_params`` / ``exits`` keys of a ``design.json``."""
        try:
            policy = str(data.get("policy", "max_softmax"))
            params = data.get("policy_params") or {}
            exits = tuple(
                Exit(int(e["position"]), str(e["head"]), float(e.get("threshold", 0.0)))
                for e in data["exits"]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"malformed design ({type(e).__name__}: {e}); expected keys policy, "
                "policy_params and exits = [{position, head, threshold}, ...]"
            ) from None
        return cls(exits=exits, policy=policy, patience=int(params.get("patience", 0)))
