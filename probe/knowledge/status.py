"""The one definition of a fact's status: known, lost, regained, newly broken (no torch).

*Known* is decided per fact from its scores under the probe format's ``known`` definition
(:data:`~probe.knowledge.protocol.KNOWN_DEFINITIONS`): ``first_token`` (an answer's first token
is top-1), ``full_answer`` (the greedy continuation is an acceptable answer, every token, any
alias) or ``robust`` (full answer under at least two of the relation's templates; a fact with
fewer templates needs all of them). The transitions between variants are set arithmetic on
the known flags, the same for eval, the compression report, recovery evaluation, capture
metadata, analysis and the dashboard:

* lost: known to the original, not to the compressed model;
* regained: lost, and known after recovery;
* still lost: lost, and not known after recovery;
* newly broken: known to the compressed model, not after recovery;
* gained: known to neither original nor compressed, known after recovery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from probe.knowledge.protocol import KNOWN_DEFINITIONS, ROBUST_MIN_TEMPLATES


def _field(score: Any, name: str) -> Any:
    return score.get(name) if isinstance(score, Mapping) else getattr(score, name, None)


def is_known(score: Any, definition: str) -> bool:
    """Whether one fact's scores (a :class:`FactScore` or its saved dict) count as known under ``definition``."""
    if definition == "first_token":
        return _field(score, "rank") == 0
    if definition == "full_answer":
        return bool(_field(score, "exact_match"))
    if definition == "robust":
        matches = _field(score, "template_matches") or ()
        if not matches:
            raise ValueError("the robust definition needs each template's full-answer match (template_matches)")
        return sum(map(bool, matches)) >= min(ROBUST_MIN_TEMPLATES, len(matches))
    raise ValueError(f"unknown known definition {definition!r}: use one of {', '.join(KNOWN_DEFINITIONS)}")


def known_ids(scores: Iterable[Any], definition: str) -> list[str]:
    """Ids of the facts known under ``definition``, in order."""
    return [_field(s, "fact_id") for s in scores if is_known(s, definition)]


@dataclass(frozen=True)
class Transitions:
    """Per-fact masks between the original, the compressed and (optionally) a recovered variant."""

    lost: np.ndarray
    regained: np.ndarray | None = None
    still_lost: np.ndarray | None = None
    newly_broken: np.ndarray | None = None
    gained: np.ndarray | None = None

    def counts(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in asdict(self).items() if v is not None}


def transitions(original: Sequence[bool] | np.ndarray, compressed: Sequence[bool] | np.ndarray,
                recovered: Sequence[bool] | np.ndarray | None = None) -> Transitions:
    """The status masks (module docstring) from per-fact known flags aligned by fact."""
    o, c = np.asarray(original, bool), np.asarray(compressed, bool)
    lost = o & ~c
    if recovered is None:
        return Transitions(lost)
    r = np.asarray(recovered, bool)
    return Transitions(lost, lost & r, lost & ~r, c & ~r, ~o & ~c & r)


def id_transitions(original: Iterable[str], compressed: Iterable[str], recovered: Iterable[str] | None = None,
                   ) -> dict[str, set[str]]:
    """The same transitions on sets of known fact ids (eval results' ``known_ids``)."""
    o, c = set(original), set(compressed)
    ids = sorted(o | c | set(recovered or ()))
    t = transitions([i in o for i in ids], [i in c for i in ids],
                    None if recovered is None else [i in set(recovered) for i in ids])
    return {k: {i for i, m in zip(ids, v, strict=True) if m} for k, v in vars(t).items() if v is not None}


def variant_statuses(known: Mapping[str, Sequence[bool] | np.ndarray], recoveries: Iterable[str] = ()
                     ) -> dict[str, list[str]]:
    """Per variant, each fact's label for display: known | unknown; compressed: forgotten (lost);
    recoveries: recovered (regained) | lost (still lost) | broken (newly broken)."""
    flags = {v: np.asarray(k, bool) for v, k in known.items()}
    orig, comp = flags.get("original"), flags.get("compressed")
    out: dict[str, list[str]] = {}
    for v, t in flags.items():
        status = np.where(t, "known", "unknown").astype(object)
        if orig is not None and comp is not None and v == "compressed":
            status[transitions(orig, t).lost] = "forgotten"
        elif orig is not None and comp is not None and v in set(recoveries):
            tr = transitions(orig, comp, t)
            status[tr.newly_broken] = "broken"
            status[tr.regained] = "recovered"
            status[tr.still_lost] = "lost"
        out[v] = list(status)
    return out
