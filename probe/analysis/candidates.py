"""Token ids the analysis scores: each eval fact's accepted answers, and every fact's candidate set.

A fact's candidates are its answer plus its distractors, taken from the probe file the original
capture names (its manifest's ``spec.probes``). When that file cannot be loaded (moved, or made
on another machine) the analysis falls back, explicitly, to up to three other objects of the
fact's relation in the captured probe table, and says so: :attr:`Candidates.distractors` is
recorded in the manifest and ``verdict.json``, and the fallback in the verdict's decodability note.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.analysis.captures import RunSet
from probe.analysis.decodability import CandidateSet, build_candidates
from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.knowledge.scoring import encode_pair

N_FALLBACK = 3  # distractors per fact when the probe file cannot be loaded


@dataclass(frozen=True)
class Candidates:
    """First-token ids: accepted answers per eval fact (lens ranks), candidate sets for every fact."""

    answers: list[list[int]]
    cands: CandidateSet
    distractors: str  # where the distractors came from (manifest, verdict.json)
    fallback: str = ""  # for the verdict's decodability note when the probe file was not used, else ""
    object_ids: tuple[int, ...] = ()  # every probe's object first token (what else a relation answers)


def distractors(rs: RunSet) -> tuple[list[list[str]], str, bool]:
    """Each fact's distractors, where they came from, and whether that is the fallback.

    Facts without distractors in their probe file take other objects of their relation (up to
    :data:`N_FALLBACK`), as does every fact when the file cannot be loaded.
    """
    source = rs.runs["original"].manifest.get("spec", {}).get("probes")
    facts: dict = {}
    fallback = False
    if not source:
        origin = f"the capture names no probe file; {_relation_note()}"
        fallback = True
    else:
        try:
            facts = {f.id: f for f in load_probes(source)}
            origin = f"the probe file {source}"
        except ProbeError as exc:
            origin = f"the probe file could not be loaded ({exc}); {_relation_note()}"
            fallback = True
    pool: dict[str, list[str]] = {}
    for p in rs.probes:
        pool.setdefault(p["relation"], []).append(p["object"])
    out = []
    for p in rs.probes:
        fact = facts.get(p["id"])
        if fact is not None and fact.distractors:
            out.append(list(fact.distractors))
        else:
            out.append(sorted(set(pool[p["relation"]]) - {p["object"]})[:N_FALLBACK])
    return out, origin, fallback


def _relation_note() -> str:
    return f"distractors are up to {N_FALLBACK} other objects of each fact's relation among the captured probes"


def build(rs: RunSet, tokenizer, seed: int) -> Candidates:
    """Answer and candidate first tokens, tokenised as capture does (answer after its prompt)."""

    def first(prompt: str, text: str) -> int:
        return encode_pair(tokenizer, prompt, text)[1][0]

    answers = [[first(rs.probes[i]["prompt"], a) for a in rs.probes[i]["answers"]] for i in rs.eval_rows]
    dis, origin, fallback = distractors(rs)
    answer_ids = [first(p["prompt"], p["object"]) for p in rs.probes]
    dis_ids = [[first(p["prompt"], d) for d in ds] for p, ds in zip(rs.probes, dis, strict=True)]
    note = (f"(the probe file was not available, so candidates are the answer and up to {N_FALLBACK} other objects "
            f"of its relation; see the manifest)") if fallback else ""
    return Candidates(answers, build_candidates(answer_ids, dis_ids, seed), origin, note, tuple(answer_ids))
