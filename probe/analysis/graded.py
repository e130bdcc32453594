"""Graded loss: how far down a lost answer falls, layer by layer, and what takes its place at the output.

Binary top-1 hides whether a lost answer fell to rank 2 or to rank 20 000. For lost facts this
reports the answer's full-vocabulary rank through the logit lens at every layer of both models
(:class:`~probe.analysis.families.lens.LensFamily` ``rank``): the median with its cluster-bootstrap
interval (weighted medians of the resamples) and the share in rank buckets. At the output it
sorts the compressed model's top-1 token on lost facts into what replaced the answer — a function
word or punctuation, another candidate of the fact, another object of the fact's relation, or
another token — beside the same sorting of the original's top-1 on facts it does not know (what
a wrong answer looks like without compression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.candidates import Candidates
from probe.analysis.captures import RunSet
from probe.analysis.verdict import GradedNumbers

BUCKETS = ((0, 0, "top-1"), (1, 9, "rank 2–10"), (10, 99, "rank 11–100"), (100, 999, "rank 101–1000"),
           (1000, np.inf, "below rank 1000"))
FUNCTION_WORDS = frozenset((
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and", "or", "but", "is", "are",
    "was", "were", "be", "been", "as", "that", "this", "these", "those", "it", "its", "his", "her", "their", "our",
    "your", "my", "he", "she", "they", "we", "you", "i", "not", "no", "so", "than", "then", "there", "here",
    "which", "who", "whom", "what", "when", "where", "also", "about", "into", "over", "under", "after", "before"
))
CATEGORIES = ("a function word or punctuation", "another candidate of the fact", "another object of the relation",
              "another token")


def weighted_median_reps(boot: bs.ClusterBootstrap, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per resample, the weighted median of ``values`` ``[n, L]`` over ``rows``: ``[n_boot, L]``."""
    v = np.asarray(values, np.float64)[rows]
    w = boot.weights[:, rows]
    out = np.empty((len(w), v.shape[1]))
    for li in range(v.shape[1]):
        order = np.argsort(v[:, li], kind="stable")
        cum = np.cumsum(w[:, order], 1)
        idx = np.minimum((cum < cum[:, -1:] / 2).sum(1), len(order) - 1)
        out[:, li] = v[order, li][idx]
    return out


def rank_rows(rank: dict[str, np.ndarray], lost: np.ndarray, boot: bs.ClusterBootstrap,
              layers: tuple[int, ...]) -> list[dict]:
    """Per model (original, compressed) and layer: the lost answers' median rank and rank-bucket shares."""
    if not lost.any():
        return []
    rows = []
    for variant in ("original", "compressed"):
        r = np.asarray(rank[variant], np.float64)
        med = np.median(r[lost], 0)
        lo, hi = np.nanquantile(weighted_median_reps(boot, r, lost), [0.025, 0.975], axis=0)
        for li, layer in enumerate(layers):
            rows.append({"variant": variant, "facts": "lost", "statistic": "median rank (0 = top-1)", "layer": layer,
                         "mean": float(med[li]), "lo": float(lo[li]), "hi": float(hi[li]), "n": int(lost.sum())})
        for low, high, label in BUCKETS:
            inside = ((r >= low) & (r <= high)).astype(np.float64)
            reps = boot.replicates(inside, lost)
            blo, bhi = np.nanquantile(reps, [0.025, 0.975], axis=0)
            share = inside[lost].mean(0)
            for li, layer in enumerate(layers):
                rows.append({"variant": variant, "facts": "lost", "statistic": f"share at {label}", "layer": layer,
                             "mean": float(share[li]), "lo": float(blo[li]), "hi": float(bhi[li]),
                             "n": int(lost.sum())})
    return rows


def category(token: int, text: str, candidates: set[int], relation_objects: set[int]) -> str:
    """Which kind of token replaced the answer (first match in :data:`CATEGORIES` order)."""
    word = text.strip().lower()
    if not any(ch.isalnum() for ch in word) or word in FUNCTION_WORDS:
        return CATEGORIES[0]
    if token in candidates:
        return CATEGORIES[1]
    if token in relation_objects:
        return CATEGORIES[2]
    return CATEGORIES[3]


@dataclass(frozen=True)
class Replacements:
    """Per eval fact, the category index of a model's top-1 output token (−1: not counted), with examples."""

    which: str  # "lost facts: compressed output" / "never-known facts: original output"
    kind: np.ndarray
    examples: dict[str, list[str]]


def classify(top1: np.ndarray, rows: np.ndarray, cand_ids: np.ndarray, answers: np.ndarray, relations: list[str],
             object_ids: list[int], decode, which: str, all_relations: list[str] | None = None) -> Replacements:
    """Sort ``top1`` token ids of the facts ``rows`` into :data:`CATEGORIES`.

    ``cand_ids`` ``[n, k]`` are each fact's candidate first tokens (−1 pads), ``answers[i]`` the index
    of its answer among them, ``relations[i]`` its relation; ``object_ids`` the object first tokens of
    every probe (train facts included), whose relations are ``all_relations`` (default ``relations``).
    """
    by_relation: dict[str, set[int]] = {}
    for rel, tok in zip(all_relations or relations, object_ids, strict=True):
        by_relation.setdefault(rel, set()).add(int(tok))
    kind = np.full(len(top1), -1)
    examples: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}
    for i in np.nonzero(rows)[0]:
        tok = int(top1[i])
        own = {int(c) for j, c in enumerate(cand_ids[i]) if c >= 0 and j != answers[i]}
        text = decode(tok)
        cat = category(tok, text, own, by_relation.get(relations[i], set()) - {int(cand_ids[i][answers[i]])})
        kind[i] = CATEGORIES.index(cat)
        examples[cat][text] = examples[cat].get(text, 0) + 1
    top = {c: [t for t, _ in sorted(e.items(), key=lambda x: -x[1])[:6]] for c, e in examples.items()}
    return Replacements(which, kind, top)


def replacement_rows(reps: list[Replacements], boot: bs.ClusterBootstrap) -> list[dict]:
    """Per set of facts and category: the share with its cluster-bootstrap interval and example tokens."""
    rows = []
    for r in reps:
        counted = r.kind >= 0
        if not counted.any():
            continue
        for ci, cat in enumerate(CATEGORIES):
            iv = boot.interval((r.kind == ci).astype(np.float64), counted)
            rows.append({"facts": r.which, "replaced by": cat, **iv.as_dict(), "examples": r.examples[cat]})
    return rows


def _top1_ids(rs: RunSet, variant: str) -> np.ndarray | None:
    run = rs.runs[variant]
    if "logits/topk_ids" not in run.manifest.get("shapes", {}):
        return None
    return np.asarray(run["logits/topk_ids"][:], np.int64)[rs.eval_rows, 0]


def graded(rs: RunSet, rank: dict[str, np.ndarray], cands: Candidates, lost: np.ndarray, never: np.ndarray,
           boot: bs.ClusterBootstrap, decode) -> tuple[list[dict], list[dict], GradedNumbers | None]:
    """Rank rows, replacement rows and the verdict's graded numbers (None without lost facts)."""
    ranks = rank_rows(rank, lost, boot, rs.layers)
    if not ranks:
        return [], [], None
    ev = rs.eval_rows
    relations = [p["relation"] for p in rs.probes]
    reps = []
    for variant, rows, which in (("compressed", lost, "lost facts: the compressed model's output"),
                                 ("original", never, "never-known facts: the original's output")):
        top1 = _top1_ids(rs, variant)
        if top1 is not None and rows.any() and cands.object_ids:
            ids = cands.cands.ids[ev]
            reps.append(classify(top1, rows, ids, cands.cands.answer[ev], [relations[i] for i in ev],
                                 list(cands.object_ids), decode, which, all_relations=relations))
    rep_rows = replacement_rows(reps, boot)
    last = len(rs.layers) - 1
    at = {(r["variant"], r["statistic"]): r for r in ranks if r["layer"] == rs.layers[last]}

    def iv(row: dict) -> bs.Interval:
        return bs.Interval(row["mean"], row["lo"], row["hi"], row["n"])

    comp = np.asarray(rank["compressed"], np.float64)
    top10 = boot.interval((comp[:, last] <= 9).astype(np.float64), lost)
    by = {r.which: [(row["replaced by"], iv(row)) for row in rep_rows if row["facts"] == r.which] for r in reps}
    numbers = GradedNumbers(rs.layers[last], iv(at[("original", "median rank (0 = top-1)")]),
                            iv(at[("compressed", "median rank (0 = top-1)")]), top10,
                            tuple(by.get("lost facts: the compressed model's output", [])),
                            tuple(by.get("never-known facts: the original's output", [])))
    return ranks, rep_rows, numbers
