"""Recovery objectives over next-token distributions of real (unmasked) tokens.

``kl`` (default): distillation KL(teacher ‖ student), teacher = the ORIGINAL, uncompressed
model, averaged over every real position (each position's full next-token distribution).
``lm``: next-token cross-entropy on the text itself.

Teacher logits are computed on the fly, not cached as top-k. Measured on SmolLM2-135M (2 shared
CPU cores, load ~3): the teacher's no-grad forward on a batch of 8 × 64 tokens takes 1.8 s, a
full student step (teacher + student forward/backward) 6–9 s, so the teacher is ~25% of a step.
The default run (60 steps × 4 windows over 111 windows) sees each window ~2.2 times, so a top-k
cache would need its own pass over the corpus (~25 s) to save ~55 s of teacher time (≈15% of
the run), and would approximate the teacher's tail mass. On the fly is exact and simpler;
for long runs over a small corpus a top-k cache is the better trade (not implemented).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real positions of KL(p_teacher ‖ p_student); logits ``[B, T, V]``, mask ``[B, T]``."""
    s = F.log_softmax(student_logits.float(), -1)
    t = F.log_softmax(teacher_logits.float(), -1)
    per_pos = (t.exp() * (t - s)).sum(-1)
    m = mask.to(per_pos.dtype)
    return (per_pos * m).sum() / m.sum().clamp(min=1)


def lm_loss(student_logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over positions whose next token is real."""
    logits = student_logits[:, :-1].float()
    targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def kl_per_row(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]``: each row's mean over its real positions of KL(p_teacher ‖ p_student)."""
    s = F.log_softmax(student_logits.float(), -1)
    t = F.log_softmax(teacher_logits.float(), -1)
    m = mask.to(s.dtype)
    return ((t.exp() * (t - s)).sum(-1) * m).sum(-1) / m.sum(-1).clamp(min=1)


def lm_per_row(student_logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]``: each row's next-token cross-entropy over positions whose next token is real."""
    logits = student_logits[:, :-1].float()
    ce = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
    m = mask[:, 1:].to(ce.dtype)
    return (ce * m).sum(-1) / m.sum(-1).clamp(min=1)
