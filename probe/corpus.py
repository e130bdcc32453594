"""Local general text for calibration (compress stage) and recovery training (recover stage).

Nothing is downloaded. Without a user file, the corpus is *self-generated*: the original model
continues a fixed, documented list of diverse seed prompts (:data:`SEED_PROMPTS`: stories,
how-tos, science, history, recipes, dialogue, letters, news…) by batched nucleus sampling with
a fixed seed. The seeds deliberately avoid the fact-completion shape of knowledge probes
("The capital of France is"). Generated text is cached as JSONL under
``artifacts/corpus/<model>/<hash>.jsonl`` keyed by model hash and every generation setting.

Recovery trains on text disjoint from calibration: its own seed prompts
(:data:`RECOVERY_PROMPTS`, none shared with :data:`SEED_PROMPTS`) and its own sampling seeds
(:data:`RECOVERY_SEED_OFFSET` + the recovery seed); the corpus cache key includes the prompt list.

Probe leakage: a text that contains an eval-split probe prompt verbatim (case-insensitive,
whitespace-normalised) would let calibration or recovery see the evaluation questions. User
files with such text are refused (:func:`refuse_probe_leaks`); self-generated texts that
happen to contain one are dropped (:func:`filter_probe_leaks`) and the count is recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from probe.artifacts import spec_hash, write_json_atomic
from probe.errors import ProbeError
from probe.knowledge.schema import ProbeSet
from probe.progress import track
from probe.store import ArtifactStore, model_key

CORPUS_VERSION = 1

SEED_PROMPTS: tuple[str, ...] = (
    # stories
    "Once upon a time, in a small village by the sea, there lived",
    "The old lighthouse keeper climbed the stairs one last time and",
    "When the rain finally stopped, the children ran outside to",
    "She opened the dusty box in the attic and found",
    "The robot had never seen snow before. On the first cold morning,",
    "Deep in the forest, a fox and a crow made an unusual deal:",
    "The train was late again, so Maria decided to",
    "On the night of the festival, the whole town gathered to",
    # how-tos
    "Here is a simple way to organize your desk so that",
    "To plant tomatoes in a small garden, first",
    "If you want to learn to play the guitar, start by",
    "A good way to prepare for a job interview is to",
    "To fix a squeaky door hinge, you will need",
    "Learning a new language as an adult is easier if you",
    "Before going on a long hike, make sure you",
    "To write a clear email to a colleague,",
    # science explanations
    "Plants make their own food through a process in which",
    "The reason the sky looks blue during the day is that",
    "When water is heated, its molecules begin to",
    "Vaccines help the body defend itself by",
    "Earthquakes happen when large pieces of the Earth's crust",
    "A rainbow forms when sunlight passes through",
    "Muscles grow stronger after exercise because",
    "Computers store information using",
    # history and society
    "In the early days of printing, books were",
    "Ancient farmers learned to store grain because",
    "The invention of the steam engine changed daily life by",
    "Before there were clocks, people kept track of time by",
    "Markets in medieval towns were busy places where",
    "The first public libraries were created so that",
    # recipes and food
    "To make a simple vegetable soup, begin by chopping",
    "The secret to fluffy pancakes is",
    "For a quick weeknight dinner, try mixing",
    "Fresh bread smells wonderful because while it bakes,",
    "A good salad needs a balance of",
    # dialogue
    '"Are you sure this is the right road?" asked Tom. "Of course," said Anna,',
    '"I think we should talk about the project," said the manager.',
    '"Why do cats always sit in boxes?" the child asked her father.',
    "Customer: Hello, I would like to return these shoes.\nClerk:",
    "Teacher: Who can tell me what happens when ice melts?\nStudent:",
    # letters, opinion, description, news-like
    "Dear Grandma, thank you so much for the birthday present.",
    "I have always believed that good habits are",
    "The kitchen was warm and bright, with",
    "Local volunteers spent the weekend cleaning the river banks and",
    "The new community garden opened on Saturday, and",
    "Many people enjoy walking in the morning because",
    "Our team learned three important lessons from the last project:",
    "The city park changes with every season. In spring,",
)

# Recovery text (probe/recover/data.py): other topics, same variety of genres, no fact-completion shape.
RECOVERY_PROMPTS: tuple[str, ...] = (
    # stories
    "The lighthouse had been dark for years until one stormy evening",
    "My neighbour keeps bees, and last summer one of the hives",
    "The bus driver noticed a small dog waiting at every stop, so",
    "Nobody in the office knew who left the flowers on the desk each Monday, until",
    "The puppet maker carved a new face for the old puppet and",
    "A lost kite landed in the schoolyard, tangled in the fence, and",
    "The twins decided to build a raft out of empty bottles because",
    "After the power went out, the family sat around a candle and",
    # how-tos
    "The easiest way to keep houseplants alive through the winter is to",
    "To repaint a wooden chair without making a mess, you should",
    "Packing a suitcase for a week-long trip gets easier when you",
    "If your bicycle chain keeps slipping, check whether",
    "A simple budget for the month starts with",
    "To teach a puppy to sit, hold a small treat",
    "Cleaning a cast iron pan properly means",
    "When you move into a new flat, the first things to unpack are",
    # explanations
    "Bread rises in the oven because tiny bubbles of gas",
    "Ice floats on water, which matters for lakes in winter because",
    "Birds can fly long distances without getting lost since",
    "A bicycle stays upright while moving mostly because",
    "Soap removes grease from dishes by",
    "Thunder follows lightning because the air around the flash",
    "Leaves change colour in autumn when trees stop",
    "A refrigerator keeps food cold by moving heat",
    # daily life and society
    "Street markets on Sunday mornings are lively because",
    "Working from home changed the way many people",
    "Public parks need volunteers who",
    "Board games became popular again when families",
    "The school cafeteria started serving more vegetables after",
    # food
    "For a hearty lentil stew, start by softening onions and",
    "Homemade lemonade tastes best when",
    "The trick to crispy roasted potatoes is",
    "A picnic lunch that travels well includes",
    "To bake simple oat cookies, mix",
    # dialogue
    '"Did you remember the tickets?" asked Leo. "I thought you had them," replied Sam,',
    '"Can we keep the kitten?" the boy asked his mother.',
    "Receptionist: Good morning, how can I help you today?\nVisitor:",
    "Coach: Why do we stretch before running?\nPlayer:",
    # letters, opinion, description
    "Dear team, thank you for all the hard work this season.",
    "I think the best part of a rainy day is",
    "The workshop smelled of sawdust and oil, and",
    "Our book club meets every second Thursday, and this month",
    "Every town has a small café where",
    "The harbour at dawn is quiet except for",
)
RECOVERY_SEED_OFFSET = 1000  # recovery samples with seed RECOVERY_SEED_OFFSET + its seed; calibration with its seed


def seed_prompts(purpose: str) -> tuple[str, ...]:
    """The generation prompts of a corpus: ``calibration`` (compression) or ``recovery`` (recovery training)."""
    if purpose not in ("calibration", "recovery"):
        raise ProbeError(f"unknown corpus purpose {purpose!r}: use calibration or recovery")
    return SEED_PROMPTS if purpose == "calibration" else RECOVERY_PROMPTS


@dataclass(frozen=True)
class CorpusSpec:
    """Settings that determine a self-generated corpus (and its cache key)."""

    n_samples: int = 64
    max_new_tokens: int = 128
    seed: int = 0
    temperature: float = 0.9
    top_p: float = 0.95
    batch_size: int = 16
    purpose: str = "calibration"  # which seed prompts: calibration (SEED_PROMPTS) or recovery (RECOVERY_PROMPTS)

    def __post_init__(self) -> None:
        seed_prompts(self.purpose)
        if self.n_samples < 1 or self.max_new_tokens < 1:
            raise ProbeError("corpus needs at least 1 sample of at least 1 token: raise --n-calibration/--seq-len")


def corpus_path(model_name: str, model_hash: str, spec: CorpusSpec) -> Path:
    """The cache file of the text ``spec`` samples from the model ``model_name`` with weights ``model_hash``."""
    content = {"model": model_hash, "spec": spec, "prompts": seed_prompts(spec.purpose), "v": CORPUS_VERSION}
    if spec.purpose == "calibration":  # calibration caches keep the key they had before recovery text existed
        content["spec"] = {k: v for k, v in vars(spec).items() if k != "purpose"}
    key = spec_hash(content)
    return ArtifactStore.default().corpus_file(model_key(model_name), key)


def general_corpus(loaded, n_samples: int = 64, max_new_tokens: int = 128, seed: int = 0,
                   **settings) -> list[str]:
    """General text sampled from ``loaded`` (a LoadedModel) itself; cached, deterministic.

    Sample ``i`` continues ``prompts[i % len(prompts)]`` of ``seed_prompts(purpose)`` (``settings``:
    the other :class:`CorpusSpec` fields); the returned text is the seed prompt plus its continuation.
    """
    spec = CorpusSpec(n_samples, max_new_tokens, seed, **settings)
    path = corpus_path(loaded.name, loaded.model_hash, spec)
    if path.is_file():
        return load_text(path)
    texts = _generate(loaded.model, loaded.tokenizer, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tmp.replace(path)
    write_json_atomic(path.with_suffix(".json"), {"spec": spec, "seed_prompts": seed_prompts(spec.purpose),
                                                  "model_hash": loaded.model_hash})
    return texts


@torch.no_grad()
def _generate(model, tokenizer, spec: CorpusSpec) -> list[str]:
    seeds = seed_prompts(spec.purpose)
    prompts = [seeds[i % len(seeds)] for i in range(spec.n_samples)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            batches = [prompts[i:i + spec.batch_size] for i in range(0, len(prompts), spec.batch_size)]
            for batch in track(batches, f"Generating text ({spec.n_samples}×{spec.max_new_tokens} tokens)"):
                enc = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
                out = model.generate(**enc, do_sample=True, temperature=spec.temperature, top_p=spec.top_p,
                                     max_new_tokens=spec.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
                conts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
                texts.extend(p + c for p, c in zip(batch, conts, strict=True))
        finally:
            tokenizer.padding_side = side
    return texts


def load_text(path: str | Path) -> list[str]:
    """Texts from a ``.jsonl`` file (``{"text": ...}`` per line) or a plain text file.

    Plain text is split into blank-line separated paragraphs, or into lines when it has no
    blank lines. Missing, empty, binary or malformed files are one-line errors.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ProbeError(f"text file {p} does not exist: give a .txt or .jsonl file with text")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProbeError(f"{p} is not UTF-8 text: give a .txt or .jsonl file with text") from None
    if "\x00" in raw:
        raise ProbeError(f"{p} looks binary, not text: give a .txt or .jsonl file with text")
    if p.suffix.lower() in (".jsonl", ".json"):
        texts = _jsonl_texts(p, raw)
    else:
        paras = re.split(r"\n\s*\n", raw) if re.search(r"\n\s*\n", raw) else raw.splitlines()
        texts = [t.strip() for t in paras if t.strip()]
    if not texts:
        raise ProbeError(f"{p} contains no text: give a file with at least one non-empty paragraph")
    return texts


def _jsonl_texts(p: Path, raw: str) -> list[str]:
    texts = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ProbeError(f"{p} line {i} is not JSON: each line must be {{\"text\": ...}}") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ProbeError(f"{p} line {i} has no string field 'text': each line must be {{\"text\": ...}}")
        if row["text"].strip():
            texts.append(row["text"])
    return texts


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def find_probe_leaks(texts: Sequence[str], probes: ProbeSet, split: str = "eval") -> dict[int, str]:
    """``{text index: the first probe prompt it contains}`` for prompts of ``split``."""
    prompts = sorted({_norm(p) for f in probes.split(split) for p in f.prompts if p.strip()})
    leaks: dict[int, str] = {}
    for i, text in enumerate(texts):
        t = _norm(text)
        hit = next((p for p in prompts if p in t), None)
        if hit is not None:
            leaks[i] = hit
    return leaks


def filter_probe_leaks(texts: Sequence[str], probes: ProbeSet, split: str = "eval") -> tuple[list[str], int]:
    """The texts without any leaking one, and how many were removed."""
    leaks = find_probe_leaks(texts, probes, split)
    return [t for i, t in enumerate(texts) if i not in leaks], len(leaks)


def refuse_probe_leaks(texts: Sequence[str], probes: ProbeSet, source: str, split: str = "eval") -> None:
    """Raise when any text contains a ``split`` probe prompt verbatim."""
    leaks = find_probe_leaks(texts, probes, split)
    if leaks:
        i, prompt = next(iter(leaks.items()))
        raise ProbeError(f"{source} contains {len(leaks)} text(s) with {split}-split probe prompts (text {i + 1}: "
                         f"{prompt!r}): remove them, or omit --calibration to use self-generated text")
