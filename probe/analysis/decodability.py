"""Is a fact's answer still linearly decodable from a layer's hidden state, even when not output?

The probe picks the answer among the fact's candidates (its object plus its distractors, the
multiple-choice set of the probe file). Per-object classes cannot work here: split by subject,
most eval facts (every capital, every chemical symbol) have an object no train fact has. So a
candidate ``c`` is scored from ``φ(h, c) = norm(h) ⊙ u_c`` — the final-normed residual times the
unembedding row of the candidate's first token, both from the original model — by one binary
logistic regression (:mod:`probe.analysis.logistic`) ("is this the answer?") shared by all facts; the fact's
prediction is its highest-scoring candidate. Summing ``φ`` with unit weights is the logit lens
restricted to the candidates, so the probe is a learned, per-dimension re-weighting of the lens:
it finds answers that are present in the residual but not read out in the original's basis.
Candidate order is shuffled (seeded) so ties never favour the answer. A uniform guess succeeds
with 1/#candidates; the analysis measures chance instead, with the same probe (same
cross-validation) trained on label-shuffled answers (:meth:`CandidateSet.shuffled`).

With ~600 training facts and d=576 (SmolLM2) a full-rank probe overfits and falls below the plain
lens. So features are centred within each fact (a binary logit on centred features approximates
the conditional logit over a fact's candidates), and the probe sees the lens score itself plus the
top ``rank`` principal components of ``φ``: it can only match or re-weight the lens along a few
directions. Its inverse regularisation ``C`` and ``rank`` (0: the lens score alone) are chosen by
cross-validation inside the training facts only (:func:`select_probe`, grouped by subject when
subjects are given), never on the facts it is scored on; the choice is returned with the scores.
One PCA at the largest rank per inner fold serves every smaller rank (its leading components are
the same), so the grid costs one PCA and a few small logistic fits per fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import GroupKFold, KFold

from probe.analysis.logistic import LogisticFit, fit_logistic
from probe.errors import ProbeError


@dataclass(frozen=True)
class CandidateSet:
    """Per fact: candidate token ids ``[n, k]`` (−1 pads), which one is the answer, which are real."""

    ids: np.ndarray
    answer: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.ids >= 0

    @property
    def chance(self) -> np.ndarray:
        """Per fact, the accuracy of a uniform guess."""
        return 1.0 / self.mask.sum(1)

    def subset(self, rows: np.ndarray) -> CandidateSet:
        return CandidateSet(self.ids[rows], self.answer[rows])

    def shuffled(self, seed: int) -> CandidateSet:
        """The same candidates with each fact's "answer" label moved to a random real candidate (seeded).

        A probe trained on these labels learns no knowledge; scored against the true answers it
        measures the probe's chance level, biases of the lens score and the candidate sets included.
        """
        rng = np.random.default_rng(seed)
        n_real = self.mask.sum(1)
        return CandidateSet(self.ids, (rng.random(len(n_real)) * n_real).astype(np.int64))


def build_candidates(answer_ids: list[int], distractor_ids: list[list[int]], seed: int = 0) -> CandidateSet:
    """Candidates from first-token ids: the answer plus distractors with a different first token, shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for ans, dis in zip(answer_ids, distractor_ids, strict=True):
        row = [ans, *dict.fromkeys(d for d in dis if d != ans)]
        rows.append([row[j] for j in rng.permutation(len(row))])
    k = max(len(r) for r in rows)
    ids = np.full((len(rows), k), -1, np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    answer = np.array([r.index(a) for r, a in zip(rows, answer_ids, strict=True)])
    if k < 2:
        raise ProbeError("decodability needs at least two candidates per fact (an answer and a distractor with a "
                         "different first token): give the probes distractors")
    return CandidateSet(ids, answer)


@dataclass(frozen=True)
class ProbeData:
    """Candidate features ``[n, k, d]`` of one variant at one layer, with their candidate set."""

    feats: np.ndarray
    cands: CandidateSet

    def subset(self, rows: np.ndarray) -> ProbeData:
        return ProbeData(self.feats[rows], self.cands.subset(rows))

    def shuffled(self, seed: int) -> ProbeData:
        """The same features with label-shuffled answers (:meth:`CandidateSet.shuffled`)."""
        return ProbeData(self.feats, self.cands.shuffled(seed))


def candidate_features(h_normed: np.ndarray, cand_vectors: np.ndarray) -> np.ndarray:
    """``φ(h, c) = h ⊙ u_c``: ``[n, d]`` × ``[n, k, d]`` → ``[n, k, d]`` (float32)."""
    return (np.asarray(h_normed, np.float32)[:, None, :] * np.asarray(cand_vectors, np.float32))


def _centred(data: ProbeData) -> np.ndarray:
    """``φ`` minus its mean over the fact's real candidates (pads stay zero)."""
    mask = data.cands.mask[..., None]
    mean = np.where(mask, data.feats, 0).sum(1, keepdims=True) / mask.sum(1, keepdims=True)
    return np.where(mask, data.feats - mean, 0).astype(np.float32)


C_GRID = (0.01, 0.1, 1.0, 10.0)
RANK_GRID = (0, 4, 16, 64)
INNER_FOLDS = 3


@dataclass(frozen=True)
class ProbeChoice:
    """The probe's inverse regularisation and principal-component count, and their inner-CV accuracy."""

    c: float
    rank: int
    cv_accuracy: float


@dataclass
class CandidateProbe:
    """Logistic regression on [centred lens score, top ``rank`` principal components of centred ``φ``]."""

    pca: PCA | None
    rank: int
    model: LogisticFit | None
    lens_scale: float
    pc_scale: float

    def features(self, data: ProbeData) -> np.ndarray:
        """Real (fact, candidate) rows → ``[rows, 1 + rank]``."""
        return _features(_centred(data)[data.cands.mask], self.pca, self.rank, self.lens_scale, self.pc_scale)

    def decision(self, data: ProbeData) -> np.ndarray:
        """Scores ``[n, k]``; pads are −inf."""
        scores = np.full(data.cands.mask.shape, -np.inf)
        scores[data.cands.mask] = self.model.decision_function(self.features(data))
        return scores


def _features(x: np.ndarray, pca: PCA | None, rank: int, lens_scale: float, pc_scale: float) -> np.ndarray:
    lens = x.sum(1, keepdims=True) / lens_scale
    if rank == 0 or pca is None:
        return lens
    return np.concatenate([lens, pca.transform(x)[:, :rank] / pc_scale], 1)


def _rows(data: ProbeData) -> tuple[np.ndarray, np.ndarray]:
    """Centred features of every real (fact, candidate) pair and whether it is the answer."""
    mask = data.cands.mask
    target = (np.arange(mask.shape[1])[None, :] == data.cands.answer[:, None])[mask]
    return _centred(data)[mask], target


def _max_rank(x: np.ndarray, rank: int) -> int:
    return max(0, min(rank, x.shape[1], x.shape[0] - 1))


def _basis(x: np.ndarray, rank: int, seed: int) -> tuple[PCA | None, float, float]:
    """The PCA of ``x`` at ``rank`` components (None at rank 0) and the lens and component scales."""
    lens_scale = float(x.sum(1).std()) or 1.0
    if rank == 0:
        return None, lens_scale, 1.0
    # exact and fastest where features are few (576 for SmolLM2); randomised where they are many (4096)
    solver = "covariance_eigh" if x.shape[1] <= min(x.shape[0], 1024) else "auto"
    pca = PCA(rank, svd_solver=solver, random_state=seed).fit(x)
    return pca, lens_scale, float(np.sqrt(pca.explained_variance_[0])) or 1.0


def fit_probe(data: ProbeData, *, c: float = 0.1, rank: int = 32, seed: int = 0) -> CandidateProbe:
    """Binary logistic regression over every real (fact, candidate) pair: is it the answer?"""
    x, target = _rows(data)
    rank = _max_rank(x, rank)
    pca, lens_scale, pc_scale = _basis(x, rank, seed)
    probe = CandidateProbe(pca, rank, None, lens_scale, pc_scale)
    probe.model = fit_logistic(probe.features(data), target, c)
    return probe


def select_probe(train: ProbeData, *, groups: np.ndarray | None = None, c_grid: tuple[float, ...] = C_GRID,
                 rank_grid: tuple[int, ...] = RANK_GRID, folds: int = INNER_FOLDS, seed: int = 0) -> ProbeChoice:
    """``C`` and rank with the best ``folds``-fold accuracy within ``train`` (ties: the smaller rank, then C).

    Folds keep a subject's facts together when ``groups`` (one label per fact) is given. Too few
    facts for inner folds → the smallest C and the lens score alone (rank 0), with a NaN accuracy.
    """
    n = len(train.feats)
    n_groups = n if groups is None else len(np.unique(groups))
    if min(n, n_groups) < max(folds, 2) * 2:
        return ProbeChoice(min(c_grid), 0, float("nan"))
    splitter = (KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)) if groups is None
                else GroupKFold(folds).split(np.arange(n), groups=groups))
    grid = [(c, r) for r in sorted(rank_grid) for c in sorted(c_grid)]
    hits = np.zeros(len(grid))
    for tr, te in splitter:
        fit, test = train.subset(tr), train.subset(te)
        x, target = _rows(fit)
        xt = _centred(test)[test.cands.mask]
        top = _max_rank(x, max(rank_grid))
        pca, lens_scale, pc_scale = _basis(x, top, seed)
        full, full_test = _features(x, pca, top, lens_scale, pc_scale), _features(xt, pca, top, lens_scale, pc_scale)
        warm: dict[int, np.ndarray] = {}  # per rank, warm-started along the ascending C grid
        for gi, (c, r) in enumerate(grid):
            r = min(r, top)
            model = fit_logistic(full[:, : 1 + r], target, c, init=warm.get(r))
            warm[r] = model.packed
            scores = np.full(test.cands.mask.shape, -np.inf)
            scores[test.cands.mask] = model.decision_function(full_test[:, : 1 + r])
            hits[gi] += (scores.argmax(1) == test.cands.answer).sum()
    best = int(np.argmax(hits))  # first maximum: the smallest rank, then the smallest C
    c, r = grid[best]
    return ProbeChoice(c, min(r, train.feats.shape[2]), float(hits[best] / n))  # the rank actually used


def predict_correct(probe: CandidateProbe, data: ProbeData) -> np.ndarray:
    """Per fact: does the probe's highest-scoring candidate equal the answer?"""
    return probe.decision(data).argmax(1) == data.cands.answer


@dataclass(frozen=True)
class ProbeScores:
    """Per target, which facts the probe gets right; and the (C, rank) chosen inside the training facts."""

    correct: dict[str, np.ndarray]
    choice: ProbeChoice


def held_out_correct(train: ProbeData, targets: Mapping[str, ProbeData], *, groups: np.ndarray | None = None,
                     seed: int = 0) -> ProbeScores:
    """Choose C and rank inside ``train`` (train-split facts), fit on all of it, score every target."""
    choice = select_probe(train, groups=groups, seed=seed)
    probe = fit_probe(train, c=choice.c, rank=choice.rank, seed=seed)
    return ProbeScores({name: predict_correct(probe, data) for name, data in targets.items()}, choice)


def cross_val_correct(source: ProbeData, targets: Mapping[str, ProbeData], folds: int = 5, *,
                      groups: np.ndarray | None = None, seed: int = 0) -> ProbeScores:
    """Fallback when only eval facts exist: k-fold over the same facts, fit on ``source``'s other folds.

    C and rank are chosen anew inside each outer fold's training part (nested); the reported
    choice is the most frequent one over folds. ``targets`` hold the same facts in the same order
    (other variants: a transfer score).
    """
    n = len(source.feats)
    if n < folds:
        raise ProbeError(f"cross-validated decodability needs at least {folds} facts, got {n}")
    out = {name: np.zeros(n, bool) for name in targets}
    choices = []
    for tr, te in KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)):
        scores = held_out_correct(source.subset(tr), {name: d.subset(te) for name, d in targets.items()},
                                  groups=None if groups is None else groups[tr], seed=seed)
        choices.append(scores.choice)
        for name, correct in scores.correct.items():
            out[name][te] = correct
    keys = [(ch.c, ch.rank) for ch in choices]
    c, r = max(set(keys), key=lambda k: (keys.count(k), -k[1], -k[0]))
    return ProbeScores(out, ProbeChoice(c, r, float(np.nanmean([ch.cv_accuracy for ch in choices]))))
