"""The first step of the analysis: find one complete capture per variant and check they compare.

:func:`find_runs` discovers the captures (or opens those named by ``--runs``), :func:`check_runs`
refuses captures that cannot be compared (other probe sets, splits or tokenisation, no shared
layer, no residuals) and returns a :class:`RunSet`, from which every metric family reads.
Every statistic is at the probes' last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis.divergence import check_finite
from probe.analysis.spec import VARIANT_ORDER, AnalyzeSpec
from probe.capture.store import CaptureRun, open_run
from probe.errors import ProbeError
from probe.models.hooks import HOOKS
from probe.store import ArtifactStore, model_key

POS = "last"
RECOVERIES = tuple(v for v in VARIANT_ORDER if v not in ("original", "compressed"))
_SPLIT_PREFERENCE = {"all": 2, "eval": 1}


def capture_command(spec: AnalyzeSpec, variant: str) -> str:
    """The `probe capture` command that makes the missing capture of ``variant``."""
    comp = "" if variant == "original" else f" --compression {spec.compression}"
    return f"`probe capture --model {spec.model} --variant {variant}{comp} --split all`"


def find_runs(spec: AnalyzeSpec) -> dict[str, CaptureRun]:
    """One complete capture per variant (original first), from ``--runs`` or by discovery.

    Discovery groups the complete captures of the original and of ``--compression`` by probe set
    and split, keeps the groups holding both an original and a compressed capture, and takes the
    one of ``--split all`` (held-out training facts for decodability) over an eval-only one, then
    the one with the most variants; captures of other probe sets (a quick look at a few probes)
    do not get in the way.
    """
    store = ArtifactStore.default()
    model = model_key(spec.model)
    if spec.runs:
        runs = [open_run(store.capture(model, r)) for r in spec.runs]
        for r in runs:
            m = r.manifest
            if m.get("status") != "complete":
                raise ProbeError(f"capture {r.path} is unfinished: rerun its `probe capture` command to resume it")
            if m.get("variant") != "original" and m.get("compression") != spec.compression:
                raise ProbeError(f"run {r.path.name} is {m.get('compression')}/{m.get('variant')}, not of "
                                 f"--compression {spec.compression}")
        return _one_per_variant(runs)
    runs = [r for r in _open_complete(store, model) if
            r.manifest.get("variant") == "original" or r.manifest.get("compression") == spec.compression]
    groups: dict[tuple, list[CaptureRun]] = {}
    for r in runs:
        groups.setdefault((r.manifest.get("probe_hash"), r.manifest.get("split")), []).append(r)
    usable = [g for g in groups.values() if {"original", "compressed"} <= {r.manifest.get("variant") for r in g}]
    if not usable:
        have = {r.manifest.get("variant"): r.path.name for r in runs}
        for needed in ("original", "compressed"):
            if needed not in have:
                raise ProbeError(f"no complete {needed} capture of {spec.model} under {store.root}: run "
                                 f"{capture_command(spec, needed)}")
        raise ProbeError(f"captures come from different probe sets: original {have['original']} and compressed "
                         f"{have['compressed']} share no probe set and split; capture every variant with the same "
                         f"--probes and --split")

    def rank(group: list[CaptureRun]) -> tuple[int, int]:
        return _SPLIT_PREFERENCE.get(group[0].manifest.get("split"), 0), len({r.manifest["variant"] for r in group})

    usable.sort(key=rank, reverse=True)
    if len(usable) > 1 and rank(usable[0]) == rank(usable[1]):
        raise ProbeError(f"several capture sets fit equally ({', '.join(r.path.name for r in usable[0])} and "
                         f"{', '.join(r.path.name for r in usable[1])}): choose one per variant with --runs")
    return _one_per_variant(usable[0])


def _open_complete(store: ArtifactStore, model: str) -> list[CaptureRun]:
    """Every complete capture of ``model``; a damaged one is left out with a warning (the store's listing)."""
    out = []
    for handle in store.captures(model):
        try:
            if handle.manifest() is not None:
                out.append(open_run(handle))
        except ProbeError as exc:
            store.warn(f"skipped: {exc}")
    return out


def _one_per_variant(runs: list[CaptureRun]) -> dict[str, CaptureRun]:
    out: dict[str, CaptureRun] = {}
    for r in runs:
        v = r.manifest.get("variant")
        if v in out:
            raise ProbeError(f"several captures of variant {v!r}: {out[v].path.name}, {r.path.name}; choose one "
                             f"per variant with --runs")
        out[v] = r
    for needed in ("original", "compressed"):
        if needed not in out:
            raise ProbeError(f"--runs names no {needed} capture: add one")
    return {v: out[v] for v in VARIANT_ORDER if v in out}


@dataclass
class RunSet:
    """Checked captures: common layers and hooks, the probe table, eval and train rows.

    ``runs`` maps each variant (original first, in :data:`VARIANT_ORDER`) to its capture; any
    object with ``path``, ``manifest``, ``probes`` and ``[array name]`` will do (tests pass
    in-memory ones).
    """

    runs: dict[str, CaptureRun]
    layers: tuple[int, ...]
    hooks: frozenset[str]
    probes: list[dict]
    eval_rows: np.ndarray
    train_rows: np.ndarray

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.runs)

    @property
    def others(self) -> tuple[str, ...]:
        """Every variant but the original (those compared with it)."""
        return tuple(v for v in self.runs if v != "original")

    @property
    def recoveries(self) -> tuple[str, ...]:
        return tuple(v for v in self.runs if v in RECOVERIES)

    def hook(self, kind: str, layer: int) -> str:
        return f"{POS}/{HOOKS[kind].format(layer=layer)}"

    def has(self, variant: str, name: str) -> bool:
        return name in self.runs[variant].manifest.get("shapes", {})

    def read(self, variant: str, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one array (float64), refused if any value is NaN/inf."""
        run = self.runs[variant]
        values = np.asarray(run[name][:], dtype=np.float64)[rows]
        check_finite(values, f"{variant} capture {run.path.name}, array {name}")
        return values

    def output_top1(self, variant: str) -> np.ndarray:
        """Per eval fact: does the variant know it, under the probe format's definition of known
        (:mod:`probe.knowledge.status`, decided at capture and stored in the probe table)? A capture
        made before the table carried ``known`` falls back to its first-token top-1 array."""
        rows = self.runs[variant].probes
        if rows and all("known" in r for r in rows):
            return np.array([bool(r["known"]) for r in rows])[self.eval_rows]
        return np.asarray(self.runs[variant]["logits/answer_top1"][:], bool)[self.eval_rows]


def check_runs(runs: dict[str, CaptureRun]) -> RunSet:
    """Refuse captures that cannot be compared, saying why."""
    ref = runs["original"]
    for v, r in runs.items():
        for key, what in (("probe_hash", "probe sets"), ("split", "splits"), ("protocol", "probe formats")):
            if r.manifest.get(key) != ref.manifest.get(key):
                raise ProbeError(f"captures come from different {what}: original {ref.path.name} has "
                                 f"{ref.manifest.get(key)}, {v} {r.path.name} has {r.manifest.get(key)}; capture "
                                 f"every variant with the same --probes and --split")
        if POS not in r.manifest.get("positions", []):
            raise ProbeError(f"{v} capture {r.path.name} has no '{POS}' position: recapture with --positions last")
        if v != "original":
            a, b = ref["tokens"][:], r["tokens"][:]
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = int(np.nonzero((a != b).any(1))[0][0]) if a.shape == b.shape else 0
                raise ProbeError(f"captures tokenise the probes differently (original {ref.path.name} vs {v} "
                                 f"{r.path.name}, first at probe {diff}): they were made with different "
                                 f"tokenizers; recapture with one model family")
    layers = sorted(set.intersection(*(set(r.manifest["layers"]) for r in runs.values())))
    if not layers:
        raise ProbeError("the captures share no layer: capture every variant with the same --layers")
    hooks = frozenset.intersection(*(frozenset(r.manifest["hooks"]) for r in runs.values()))
    if "resid_post" not in hooks:
        raise ProbeError("the analysis needs resid_post in every capture: recapture with --hooks resid_post,...")
    probes = ref.probes
    split = np.array([p["split"] for p in probes])
    return RunSet(runs, tuple(layers), hooks, probes, np.nonzero(split == "eval")[0], np.nonzero(split == "train")[0])
