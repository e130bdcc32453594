"""The displaced-vs-forgotten verdict: a paragraph generated only from numbers and their intervals.

Rules (kept here so that the text can be tested against synthetic numbers):

* A lost fact is one the original gets top-1 and the compressed model does not. Its answer is
  *decodable* when the probe on the compressed model still picks it among the fact's candidates
  at the layer chosen without looking at the compared facts.
* The decodable share is never read against an assumed chance (``1/k``) or a fixed threshold,
  but against measured baselines (:mod:`probe.analysis.baselines`), each by the cluster-bootstrap
  interval of the paired difference: the *floor* is the higher of the label-shuffled probe's
  share and the never-known facts' share; the *ceiling* is the share on margin-matched facts
  compression keeps. Decodable share above the floor and not below the ceiling: **displaced**;
  below the ceiling and not above the floor: **forgotten**; above the floor and below the
  ceiling: **partly displaced**; neither separated: **undecided**. Fewer lost facts than
  ``min_facts`` gives no verdict at all. The normalised share ``(share − floor) / (ceiling −
  floor)`` (0: chance, 1: as decodable as kept facts) is reported with its interval.
* The compressed model's own output ranking among the candidates on the lost facts says how much
  of the answer the output still shows.
* Each recovery is counted both ways against the compressed model: facts regained, facts newly
  broken, the net change and its exact McNemar p-value. Two methods are only ranked against each
  other when a Holm-corrected exact McNemar test on the eval facts separates them. Recoveries
  that put attention on a prompt (prompt mass above 5%) and those that do not are compared as two
  regimes when both kinds are present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probe.analysis.baselines import NO_COMPARISON, Compared
from probe.analysis.bootstrap import EMPTY, Interval
from probe.analysis.decodability import ProbeChoice
from probe.analysis.paired import NetRecovery, PairTest


@dataclass(frozen=True)
class RecoveryNumbers:
    """How one recovery method does on the lost facts, and how it acts (vs the compressed model)."""

    variant: str
    regained: Interval = EMPTY
    delta_cka: Interval = EMPTY
    prompt_mass: Interval = EMPTY
    attn_shift: Interval = EMPTY
    attn_shift_no_sink: Interval = EMPTY  # the same over keys after the first (the attention sink left out)
    mlp_change: Interval = EMPTY
    attn_out_change: Interval = EMPTY
    net: NetRecovery | None = None


@dataclass(frozen=True)
class PatchCurve:
    """One activation-patching curve: a direction (restored/broken) at one position set, per layer."""

    direction: str
    mode: str
    layers: tuple[int, ...]
    shares: tuple[Interval, ...]

    def peak(self) -> tuple[int, Interval]:
        i = max(range(len(self.shares)), key=lambda k: self.shares[k].mean)
        return self.layers[i], self.shares[i]

    def first_reliable(self) -> int | None:
        """The first layer whose interval excludes zero."""
        return next((la for la, iv in zip(self.layers, self.shares, strict=True) if iv.lo > 0), None)


@dataclass(frozen=True)
class PatchNumbers:
    """Activation patching of the lost facts (first-token criterion) and its sanity checks."""

    n_facts: int
    curves: tuple[PatchCurve, ...]
    sanity_restored: int
    of: int
    seconds_per_fact_layer: float

    def curve(self, direction: str, mode: str) -> PatchCurve | None:
        return next((c for c in self.curves if c.direction == direction and c.mode == mode), None)


@dataclass(frozen=True)
class GradedNumbers:
    """Lost answers' lens rank at the last captured layer, and what replaced them at the output."""

    layer: int
    median_original: Interval
    median_compressed: Interval
    top10_compressed: Interval
    replaced: tuple[tuple[str, Interval], ...]  # lost facts: the compressed model's top-1
    replaced_never: tuple[tuple[str, Interval], ...] = ()  # never-known facts: the original's top-1


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
    uniform_chance: float  # 1/#candidates, for reference only: the decision uses the measured floors
    layer: int | None
    min_facts: int
    decodability_note: str = ""
    recoveries: tuple[RecoveryNumbers, ...] = field(default_factory=tuple)
    n_never: int = 0
    output_lost: Interval = EMPTY
    lens_lost: Interval = EMPTY
    probe: ProbeChoice | None = None
    pairs: tuple[PairTest, ...] = ()
    floors: tuple[Compared, ...] = ()  # every measured floor
    floor: Compared = NO_COMPARISON  # the highest floor, which the decision uses
    ceiling: Compared = NO_COMPARISON
    normalised: Interval = EMPTY
    n_matched: int = 0
    margins: dict = field(default_factory=dict)  # median margin (nats) of lost and matched facts
    n_select: int = 0  # facts the layer was chosen on
    patching: PatchNumbers | None = None
    graded: GradedNumbers | None = None
    patching_note: str = ""

    @property
    def decision(self) -> str:
        return decide(self.floor, self.ceiling)


def decide(floor: Compared, ceiling: Compared) -> str:
    """``displaced``, ``partly displaced``, ``forgotten`` or ``undecided`` from the paired differences.

    ``floor.diff`` is share − floor, ``ceiling.diff`` share − ceiling; a side counts only where its
    interval excludes zero. No floor: undecided. No ceiling: above the floor is displaced.
    """
    if floor.diff.n == 0:
        return "undecided"
    if ceiling.diff.n == 0:
        return "displaced" if floor.above else "undecided"
    if floor.above:
        return "partly displaced" if ceiling.below else "displaced"
    return "forgotten" if ceiling.below else "undecided"


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


def _net(n: NetRecovery) -> str:
    """``regained 16, newly broken 18, net −2 (exact McNemar p = 0.86 against the compressed model)``."""
    gained = f" (and {n.gained} the original did not know)" if n.gained else ""
    sign = "+" if n.net > 0 else "−" if n.net < 0 else "±"
    return (f"regained {n.regained}{gained}, newly broken {n.broken}, net {sign}{abs(n.net)} (exact McNemar "
            f"{_p(n.p)} against the compressed model)")


def _ranking(pairs: tuple[PairTest, ...]) -> str:
    """Which methods Holm-corrected exact McNemar tests separate; the rest are not ranked."""
    if not pairs:
        return ""
    apart = [t for t in pairs if t.separated]
    if not apart:
        return (" No two methods are separated by exact McNemar tests on the eval facts (Holm-corrected), so they "
                "are not ranked.")
    parts = []
    for t in apart:
        hi, lo, n_hi, n_lo = (t.a, t.b, t.only_a, t.only_b) if t.only_a > t.only_b else (t.b, t.a, t.only_b, t.only_a)
        parts.append(f"{hi} answers more eval facts than {lo} ({n_hi} vs {n_lo} facts only one of them gets, "
                     f"Holm-corrected {_p(t.p_holm)})")
    rest = len(pairs) - len(apart)
    tail = f"; the other {rest} pair{'s are' if rest > 1 else ' is'} undecided" if rest else ""
    return " Exact McNemar tests separate: " + "; ".join(parts) + tail + "."


def _span(items: list[Interval], pct: bool = False, digits: int = 3) -> str:
    lo, hi = min(i.mean for i in items), max(i.mean for i in items)
    f = (lambda x: f"{x * 100:.0f}%") if pct else (lambda x: f"{x:.{digits}f}")
    if len(items) == 1 or f(lo) == f(hi):
        return f(lo)
    return f"from {f(lo)} to {f(hi)}" if lo < 0 else f"{f(lo)}–{f(hi)}"


def _regimes(rec: list[RecoveryNumbers]) -> str:
    """Prompt-attending vs weight-changing recoveries, stated only where the shift survives the sink control.

    With no BOS token the first token draws most attention, so a shift in attention may only move
    mass to or from that sink. The two regimes are stated only when the attention shift measured
    over the keys after the first still separates them (intervals apart); otherwise the text says
    the difference does not survive that control.
    """
    prompted = [r for r in rec if r.prompt_mass.n > 0 and r.prompt_mass.lo > 0.05]
    other = [r for r in rec if r not in prompted and r.attn_shift.n > 0]
    prompted = [r for r in prompted if r.attn_shift.n > 0]
    if not prompted or not other:
        return ""
    names = ", ".join(r.variant for r in prompted)
    others = ", ".join(r.variant for r in other)
    one = len(prompted) == 1
    apart = all(p.attn_shift.lo > o.attn_shift.hi for p in prompted for o in other)
    sink = [r for r in prompted + other if r.attn_shift_no_sink.n > 0]
    survives = apart and len(sink) == len(prompted) + len(other) and all(
        p.attn_shift_no_sink.lo > o.attn_shift_no_sink.hi for p in prompted for o in other)
    shift = (f"{names} shift{'s' if one else ''} attention by {_span([r.attn_shift for r in prompted])} nats and "
             f"{others} by {_span([r.attn_shift for r in other])} nats")
    if not survives:
        rest_p, rest_o = [r.attn_shift_no_sink for r in prompted], [r.attn_shift_no_sink for r in other]
        control = (f"; over the keys after the first (the attention sink left out) the shifts are {_span(rest_p)} "
                   f"and {_span(rest_o)} nats" if len(sink) == len(prompted) + len(other)
                   else "; no sink control was computed")
        return (f" Attention: {shift}{control}, so these data do not show two regimes of recovery beyond the "
                f"first-token attention sink.")
    text = (f" Two regimes: {names} put{'s' if one else ''} {_span([r.prompt_mass for r in prompted], pct=True)} of "
            f"attention on {'its prompt' if one else 'their prompts'}; {shift} (intervals apart), and still "
            f"{_span([r.attn_shift_no_sink for r in prompted])} vs {_span([r.attn_shift_no_sink for r in other])} "
            f"nats over the keys after the first (the attention sink left out)")
    mlp_p, mlp_o = [r.mlp_change for r in prompted if r.mlp_change.n], [r.mlp_change for r in other if r.mlp_change.n]
    if mlp_p and mlp_o:
        text += (f"; MLP outputs change by {_span(mlp_p, pct=True)} with a prompt and {_span(mlp_o, pct=True)} "
                 f"without")
    return text + ". No untrained-prefix control was captured, so attention on the prompt is not yet set " \
                  "against a prefix that learned nothing."


def _pull_back(rec: list[RecoveryNumbers]) -> str:
    """Whether recoveries move the residual stream back toward the original (ΔCKA)."""
    deltas = [r.delta_cka for r in rec if r.delta_cka.n > 0]
    if not deltas:
        return ""
    if all(d.hi < 0.02 for d in deltas):
        return (f" None pulls the residual stream back toward the original (mean ΔCKA "
                f"{_span(deltas)}): recovered facts come back by another route, not by undoing the compression.")
    back = [r.variant for r in rec if r.delta_cka.n > 0 and r.delta_cka.lo >= 0.02]
    return f" {', '.join(back)} pull{'s' if len(back) == 1 else ''} the residual stream back toward the original." \
        if back else ""


def _points(iv: Interval) -> str:
    """A difference of shares in percentage points: ``+12 [3, 20] points``."""
    sign = "+" if iv.mean > 0 else "−" if iv.mean < 0 else "±"
    return f"{sign}{abs(iv.mean) * 100:.0f} [{iv.lo * 100:+.0f}, {iv.hi * 100:+.0f}] points"


def _baselines(v: VerdictInputs) -> str:
    """Each measured baseline with its share and the paired difference."""
    parts = []
    for f in v.floors:
        where = (f"on the {v.n_never} facts neither model knows" if "never" in f.what
                 else "trained on label-shuffled answers")
        parts.append(f"{where} the same probe picks it for {f.baseline.fmt(pct=True)} (lost minus this: "
                     f"{_points(f.diff)})" if f.diff.n else f"{where} n/a")
    if v.ceiling.diff.n:
        m = v.margins
        match = (f", median margin {m['matched']:.2f} vs {m['lost']:.2f} nats for the lost facts" if m else "")
        parts.append(f"on {v.n_matched} facts compression keeps, matched to the lost ones by the original's margin "
                     f"between its top two tokens{match}, it picks it for {v.ceiling.baseline.fmt(pct=True)} (lost "
                     f"minus this: {_points(v.ceiling.diff)})")
    if not parts:
        return ""
    text = " Measured baselines: " + "; ".join(parts) + "."
    if v.normalised.n:
        text += (f" Between the higher floor ({v.floor.what}) and the ceiling, the lost facts sit at "
                 f"{v.normalised.fmt(digits=2)} (0: chance, 1: as decodable as kept facts).")
    return text


def _output(v: VerdictInputs) -> str:
    if v.output_lost.n == 0:
        return ""
    text = (f" The compressed model's own output still ranks the answer first among the candidates for "
            f"{v.output_lost.fmt(pct=True)} of the lost facts")
    if v.output_lost.lo > v.floor.baseline.hi:
        text += ", above the floor: compression demotes the answer below other tokens more than it erases it"
    elif v.output_lost.hi < v.decodable.lo:
        text += ", so the probe finds answers that the output no longer ranks first"
    return text + "."


def _graded(v: VerdictInputs) -> str:
    """How far lost answers fall and what replaces them."""
    g = v.graded
    if g is None:
        return ""
    text = (f" Graded rather than binary: at layer {g.layer} the lost answers' median full-vocabulary rank is "
            f"{g.median_original.fmt(digits=0)} in the original and {g.median_compressed.fmt(digits=0)} in the "
            f"compressed model (0 = top-1; {g.top10_compressed.fmt(pct=True)} of them within its top 10)")
    if g.replaced:
        text += "; in the answer's place the compressed model outputs " + ", ".join(
            f"{name} for {iv.fmt(pct=True)}" for name, iv in g.replaced)
        if g.replaced_never:
            text += " (the original's own wrong answers, on facts it does not know: " + ", ".join(
                f"{iv.fmt(pct=True)}" for _, iv in g.replaced_never) + " in the same order)"
    return text + "."


def _patching(v: VerdictInputs) -> str:
    """Where patching the original's residual into the compressed model brings lost facts back."""
    p = v.patching
    if p is None:
        return f" {v.patching_note[0].upper()}{v.patching_note[1:]}." if v.patching_note else ""
    parts = []
    for direction, verb in (("restored", "the original's residual restores"),
                            ("broken", "in reverse, the compressed model's residual breaks")):
        for mode, where in (("last", "the prompt's last token"), ("subject", "the subject's tokens")):
            c = p.curve(direction, mode)
            if c is None:
                continue
            layer, iv = c.peak()
            first = c.first_reliable()
            since = f", above zero from layer {first}" if first is not None else ", at no layer above zero"
            parts.append(f"at {where} {verb} at most {iv.fmt(pct=True)} (layer {layer}{since})")
    if not parts:
        return ""
    return (f" Activation patching of {p.n_facts} lost facts (the original's residual written into the compressed "
            f"model's run, and the reverse; a fact restored when its answer's first token becomes top-1): "
            + "; ".join(parts) + f". As sanity checks, the last layer's residual at every position restores "
            f"{p.sanity_restored} of {p.of}, and a run without a patch restores none by construction "
            f"({p.seconds_per_fact_layer * 1000:.0f} ms per fact and layer).")


DECISIONS = {
    "displaced": (" The decodable share is above the floor and not separated from the ceiling: lost knowledge is "
                  "displaced rather than forgotten — the compressed model still carries it about as well as facts it "
                  "keeps, but no longer outputs it."),
    "partly displaced": (" The decodable share is above the floor and below the ceiling: lost knowledge is partly "
                         "displaced — more readable than without the knowledge, less than facts compression keeps."),
    "forgotten": (" The decodable share is below the ceiling and not separated from the floor: lost knowledge is "
                  "forgotten as far as a linear probe can tell — no more decodable than without the knowledge."),
    "undecided": (" The intervals separate the decodable share from neither the floor nor the ceiling, so these "
                  "data do not decide between displaced and forgotten; more facts would narrow them."),
}


def verdict_text(v: VerdictInputs) -> str:
    """One paragraph: the decision, its numbers and intervals, the recoveries, hedged where needed."""
    head = (f"On {v.n_eval} eval facts, {v.model} knows {v.known_original.fmt(pct=True)} (as the captures' probe "
            f"format counts known) and its {v.compression} compression {v.known_compressed.fmt(pct=True)} "
            f"(95% bootstrap intervals, resampling "
            f"subjects with their facts; the decodability layer is re-chosen in every resample).")
    if v.n_lost == 0:
        return head + " Compression loses no fact the original knows, so there is nothing to call displaced or " \
                      "forgotten."
    if v.n_lost < v.min_facts:
        return head + (f" Compression loses only {v.n_lost} facts the original knows, fewer than the {v.min_facts} "
                       f"a bootstrap interval needs, so no verdict is drawn.")
    where = f"layer {v.layer}" if v.layer is not None else "the chosen layer"
    note = f" {v.decodability_note}" if v.decodability_note else ""
    probe = (f"; C {v.probe.c:g} and {v.probe.rank} principal components besides the lens score, chosen by "
             f"cross-validation on training facts" if v.probe is not None else "")
    lens = (f"; the plain lens restricted to the candidates picks it for {v.lens_lost.fmt(pct=True)} at that layer"
            if v.lens_lost.n > 0 else "")
    chosen = f" (chosen on {v.n_select} other eval facts)" if v.n_select else ""
    body = (f" Of the {v.n_lost} facts compression loses, a linear probe on the compressed model still picks the "
            f"answer among its candidates at {where}{chosen} for {v.decodable.fmt(pct=True)} (a uniform guess would "
            f"get {v.uniform_chance * 100:.0f}%{probe}{lens}){note}.")
    body += _baselines(v) + _output(v) + DECISIONS[v.decision] + _graded(v) + _patching(v)
    rec = [r for r in v.recoveries if r.regained.n > 0]
    if rec:
        parts = [f"{r.variant} regains {r.regained.fmt(pct=True)} of them"
                 + (f": {_net(r.net)}" if r.net is not None else "")
                 + f" (mean debiased ΔCKA toward the original {r.delta_cka.fmt(digits=3)}; attention on its prompt "
                   f"{r.prompt_mass.fmt(pct=True)}, attention shift {r.attn_shift.fmt(digits=3)} nats, MLP-output "
                   f"change {r.mlp_change.fmt(pct=True)})"
                 for r in rec]
        body += " Among recoveries, " + "; ".join(parts) + "."
        body += _ranking(v.pairs) + _regimes(rec) + _pull_back(rec)
    return head + body
