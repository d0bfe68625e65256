"""Is this the same training? An artefact (a profile table, a design, a search result, an
export, plot input) records the ``model_id`` of the run it was made from; the id covers the
architecture and the weights (DESIGN 2.1), so equal ids mean one training. Every check that
an artefact belongs to the run at hand is made here, with one message. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hapi_dse.errors import ArtefactError

if TYPE_CHECKING:
    from hapi_dse.run import RunDir


def same_training(theirs: object, mine: str) -> bool:
    """Whether an artefact that records the model id ``theirs`` (whatever its file holds,
    None when it records none) was made from the training ``mine``."""
    return theirs == mine


def check_same_training(
    what: str, theirs: object, run: RunDir | str, *, fix: str, holder: str | None = None
) -> None:
    """Refuse ``what`` (where and what it is: ``"PATH: design"``), which records the model id
    ``theirs``, unless it was made from ``run`` (a run, or the model id at hand). The one-line
    message names both ids, ``holder`` (what has the id at hand; ``"the run DIR"`` for a run)
    and ``fix``::

        PATH: design is for model 'A', but the run DIR is 'B'; pass --model ...

    An artefact from before ids were recorded is the caller's to let through.
    """
    if isinstance(run, str):
        mine, holder = run, holder or "the model at hand"
    else:
        mine, holder = run.model_id, holder or f"the run {run.path}"
    if not same_training(theirs, mine):
        raise ArtefactError(f"{what} is for model {theirs!r}, but {holder} is {mine!r}; {fix}")
