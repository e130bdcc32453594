"""The displaced-vs-forgotten verdict: a paragraph generated only from numbers and their intervals.

Rules (kept here so that the text can be tested against synthetic numbers):

* A lost fact is one the original gets top-1 and the compressed model does not. It counts as
  *displaced* when the decodability probe on the compressed model still picks its answer at the
  layer chosen without looking at lost facts. Guessing among ``k`` candidates succeeds with
  probability ``c = 1/k``, so the share is chance-corrected: ``(share − c) / (1 − c)``.
* "Mostly displaced" needs the corrected interval above one half, "mostly forgotten" below one
  half; an interval spanning one half is reported as undecided. Fewer lost facts than
  ``min_facts`` gives no verdict at all.
* Two methods are only ranked against each other when their intervals do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probe.analysis.bootstrap import EMPTY, Interval


@dataclass(frozen=True)
class RecoveryNumbers:
    """How one recovery method does on the lost facts, and how it acts (vs the compressed model)."""

    variant: str
    regained: Interval = EMPTY
    delta_cka: Interval = EMPTY
    prompt_mass: Interval = EMPTY
    attn_shift: Interval = EMPTY
    mlp_change: Interval = EMPTY
    attn_out_change: Interval = EMPTY


@dataclass(frozen=True)
class VerdictInputs:
    """The headline numbers the verdict paragraph is written from."""

    model: str
    compression: str
    n_eval: int
    known_original: Interval
    known_compressed: Interval
    n_lost: int
    decodable: Interval
    chance: float
    layer: int | None
    min_facts: int
    decodability_note: str = ""
    recoveries: tuple[RecoveryNumbers, ...] = field(default_factory=tuple)

    @property
    def displaced(self) -> Interval:
        """The chance-corrected displaced share among lost facts."""
        if self.decodable.n == 0 or self.chance >= 1:
            return EMPTY
        return self.decodable.scaled(self.chance, 1.0 - self.chance)


def decide(displaced: Interval) -> str:
    """``displaced``, ``forgotten`` or ``undecided`` from the chance-corrected interval."""
    if displaced.lo > 0.5:
        return "displaced"
    if displaced.hi < 0.5:
        return "forgotten"
    return "undecided"


def _compare(items: list[tuple[str, Interval]], what: str) -> str:
    """``"A <what> more than B"`` for the top item when its interval clears every other, else a hedge."""
    items = [(n, i) for n, i in items if i.n > 0]
    if len(items) < 2:
        return ""
    items.sort(key=lambda t: -t[1].mean)
    (top, ti), rest = items[0], items[1:]
    if all(ti.lo > r.hi for _, r in rest):
        return f"{top} {what} more than {', '.join(n for n, _ in rest)}"
    return f"the methods cannot be told apart on how much they {what} (intervals overlap)"


def verdict_text(v: VerdictInputs) -> str:
    """One paragraph: the decision, its numbers and intervals, the recoveries, hedged where needed."""
    head = (f"On {v.n_eval} eval facts, {v.model} answers {v.known_original.fmt(pct=True)} top-1 and its "
            f"{v.compression} compression {v.known_compressed.fmt(pct=True)} (95% bootstrap intervals over facts).")
    if v.n_lost == 0:
        return head + " Compression loses no fact the original knows, so there is nothing to call displaced or " \
                      "forgotten."
    if v.n_lost < v.min_facts:
        return head + (f" Compression loses only {v.n_lost} facts the original knows, fewer than the {v.min_facts} "
                       f"a bootstrap interval needs, so no verdict is drawn.")
    d = v.displaced
    where = f"layer {v.layer}" if v.layer is not None else "the chosen layer"
    note = f" {v.decodability_note}" if v.decodability_note else ""
    body = (f" Of the {v.n_lost} facts compression loses, a linear probe on the compressed model still picks the "
            f"answer at {where} for {v.decodable.fmt(pct=True)} (chance {v.chance * 100:.0f}%), i.e. "
            f"{d.fmt(pct=True)} after correcting for guessing{note}.")
    decision = decide(d)
    if decision == "displaced":
        body += (" Most lost knowledge is therefore displaced rather than forgotten: the weights still carry it, "
                 "but inference no longer reads it out.")
    elif decision == "forgotten":
        body += (" Most lost knowledge is therefore forgotten: the compressed model's hidden states no longer carry "
                 "the answer in linearly readable form.")
    else:
        body += (" The interval spans one half, so these data do not decide between displaced and forgotten; "
                 "more facts would narrow it.")
    rec = [r for r in v.recoveries if r.regained.n > 0]
    if rec:
        parts = [f"{r.variant} regains {r.regained.fmt(pct=True)} of them (mean ΔCKA toward the original "
                 f"{r.delta_cka.fmt(digits=3)}; attention on its prompt {r.prompt_mass.fmt(pct=True)}, attention "
                 f"shift {r.attn_shift.fmt(digits=3)} nats, MLP-output change {r.mlp_change.fmt(pct=True)})"
                 for r in rec]
        body += " Among recoveries, " + "; ".join(parts) + "."
        comparisons = [c for c in (_compare([(r.variant, r.regained) for r in rec], "regains"),
                                   _compare([(r.variant, r.attn_shift) for r in rec], "shifts attention"),
                                   _compare([(r.variant, r.mlp_change) for r in rec], "changes MLP outputs"))
                       if c]
        if comparisons:
            body += " " + "; ".join(c[0].upper() + c[1:] for c in comparisons) + "."
    return head + body
