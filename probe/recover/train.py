"""The generic recovery training loop, shared by every method (IDP passes its own routed student).

A method hands over a function that maps ``(input_ids, attention_mask)`` to logits for the
real tokens only, and the tensors to train; this loop knows nothing else about it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from probe.progress import console, progress_bar
from probe.recover.data import Batch
from probe.recover.objective import kl_loss, lm_loss
from probe.recover.spec import RecoverSpec

LogitsOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    """Per-step training losses and the held-out loss before and after training.

    The held-out loss is the distillation KL when a teacher is given (whatever the training
    objective), else next-token cross-entropy. ``held_out_baseline`` is the loss of the
    ``baseline`` model (the compressed variant without recovery) when one was given.
    """

    losses: list[float]
    held_out_before: float
    held_out_after: float
    seconds: float
    held_out_baseline: float | None = None


def batch_loss(student: LogitsOf, teacher: LogitsOf | None, batch: Batch, objective: str) -> torch.Tensor:
    ids, mask = batch
    logits = student(ids, mask)
    if objective == "kl" and teacher is not None:
        with torch.no_grad():
            target = teacher(ids, mask)
        return kl_loss(logits, target, mask)
    return lm_loss(logits, ids, mask)


@torch.no_grad()
def held_out_loss(student: LogitsOf, teacher: LogitsOf | None, held_out: Sequence[Batch]) -> float:
    """Token-weighted mean loss over the held-out batches (KL with a teacher, else LM)."""
    total, weight = 0.0, 0
    for ids, mask in held_out:
        total += float(batch_loss(student, teacher, (ids, mask), "kl")) * int(mask.sum())
        weight += int(mask.sum())
    return total / max(weight, 1)


def train(student_logits: LogitsOf, params: list[torch.Tensor], batches: Iterable[Batch],
          teacher_logits: LogitsOf | None, spec: RecoverSpec, held_out: Sequence[Batch] = (),
          baseline: LogitsOf | None = None) -> TrainResult:
    """AdamW on ``params`` for ``spec.steps`` batches; deterministic given ``spec.seed``."""
    torch.manual_seed(spec.seed)
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    base = held_out_loss(baseline, teacher_logits, held_out) if baseline is not None and held_out else None
    before = held_out_loss(student_logits, teacher_logits, held_out) if held_out else float("nan")
    losses: list[float] = []
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"Training {spec.method}", total=spec.steps)
        for batch in batches:
            loss = batch_loss(student_logits, teacher_logits, batch, spec.objective)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, description=f"Training {spec.method} loss {losses[-1]:.4f}")
            if not sys.stderr.isatty() and (len(losses) % 10 == 0 or len(losses) == spec.steps):
                console.print(f"step {len(losses)}/{spec.steps} loss {losses[-1]:.4f} "
                              f"({time.perf_counter() - start:.0f} s)", highlight=False)
            if len(losses) >= spec.steps:
                break
    seconds = time.perf_counter() - start
    after = held_out_loss(student_logits, teacher_logits, held_out) if held_out else float("nan")
    return TrainResult(losses, before, after, seconds, base)
