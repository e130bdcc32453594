"""The generic recovery training loop, shared by every method (IDP passes its own routed student).

A method hands over a function that maps ``(input_ids, attention_mask)`` to logits for the
real tokens only, and the tensors to train; this loop knows nothing else about it, except two
optional hooks of the student: ``aux_loss()`` (a loss added to the step's, e.g. an IDP router's)
and ``after_step()`` (called after each optimiser step, e.g. the IDP bias update).

Training to convergence: AdamW with linear warmup then cosine or linear decay (``spec.schedule``)
to zero at ``spec.steps``, gradient-norm clipping, and the held-out KL every ``spec.eval_every``
steps; training stops after ``spec.patience`` evaluations without improvement and the best
evaluated state is restored. The curves (train loss per step, held-out KL per evaluation) are
saved by ``probe recover`` in ``losses.json`` under ``"curves"``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from probe.progress import console, progress_bar
from probe.recover.data import Batch
from probe.recover.objective import kl_loss, lm_loss
from probe.recover.spec import RecoverSpec

LogitsOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    """Per-step training losses, the held-out loss before and after training, and the curves.

    The held-out loss is the distillation KL when a teacher is given (whatever the training
    objective), else next-token cross-entropy. ``held_out_baseline`` is the loss of the
    ``baseline`` model (the compressed variant without recovery) when one was given.
    ``held_out_after`` is that of the state kept (the best evaluated one, ``best_step``).
    """

    losses: list[float]
    held_out_before: float
    held_out_after: float
    seconds: float
    held_out_baseline: float | None = None
    curves: dict = field(default_factory=dict)
    best_step: int = 0
    stopped_step: int = 0
    tokens_seen: int = 0
    lr: float = 0.0


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


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based) of ``total``."""
    n_warm = round(warmup * total)
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    frac = (step - n_warm) / max(1, total - n_warm)
    return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac


def train(student_logits: LogitsOf, params: list[torch.Tensor], batches: Iterable[Batch],
          teacher_logits: LogitsOf | None, spec: RecoverSpec, held_out: Sequence[Batch] = (),
          baseline: LogitsOf | None = None, state: Sequence[torch.Tensor] = ()) -> TrainResult:
    """AdamW on ``params`` for at most ``spec.steps`` batches; deterministic given ``spec.seed``.

    ``state``: further tensors (buffers) restored with ``params`` to the best evaluated step.
    """
    torch.manual_seed(spec.seed)
    params = [p for p in params if p.requires_grad]
    kept = [*params, *state]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, spec.steps, spec.warmup, spec.schedule))
    aux_of = getattr(student_logits, "aux_loss", None)
    after_step = getattr(student_logits, "after_step", None)
    base = held_out_loss(baseline, teacher_logits, held_out) if baseline is not None and held_out else None
    before = held_out_loss(student_logits, teacher_logits, held_out) if held_out else float("nan")
    best, best_step, best_state, bad = before, 0, [t.detach().clone() for t in kept], 0
    losses: list[float] = []
    curves = {"train": {"step": [], "kl": []}, "heldout": {"step": [0], "kl": [before]}}
    tokens = 0
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"Training {spec.method}", total=spec.steps)
        for batch in batches:
            loss = batch_loss(student_logits, teacher_logits, batch, spec.objective)
            aux = aux_of() if aux_of is not None else None
            opt.zero_grad(set_to_none=True)
            (loss if aux is None else loss + aux).backward()
            if spec.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, spec.clip)
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            losses.append(float(loss.detach()))
            tokens += int(batch[1].sum())
            step = len(losses)
            curves["train"]["step"].append(step)
            curves["train"]["kl"].append(losses[-1])
            bar.update(task, advance=1, description=f"Training {spec.method} loss {losses[-1]:.4f}")
            if held_out and (step % spec.eval_every == 0 or step == spec.steps):
                now = held_out_loss(student_logits, teacher_logits, held_out)
                curves["heldout"]["step"].append(step)
                curves["heldout"]["kl"].append(now)
                if not sys.stderr.isatty():
                    console.print(f"step {step}/{spec.steps} loss {losses[-1]:.4f} held-out {now:.4f} "
                                  f"({time.perf_counter() - start:.0f} s)", highlight=False)
                if now < best:
                    best, best_step, bad = now, step, 0
                    best_state = [t.detach().clone() for t in kept]
                else:
                    bad += 1
                    if spec.patience and bad >= spec.patience:
                        break
            if step >= spec.steps:
                break
    seconds = time.perf_counter() - start
    if held_out:
        with torch.no_grad():
            for t, saved in zip(kept, best_state, strict=True):
                t.copy_(saved)
        after = best
    else:
        after, best_step = float("nan"), len(losses)
    return TrainResult(losses, before, after, seconds, base, curves, best_step, len(losses), tokens, spec.lr)
