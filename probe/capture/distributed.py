"""Sharding a capture over torchrun ranks (torch.distributed: gloo on CPU, nccl on GPU).

Under ``torchrun --nproc-per-node N -m probe capture …`` every rank loads the variant, takes a
contiguous range of batches (hence of probes and of whole chunks) and writes it into the same
store; rank 0 creates the store before the others open it and finalises the manifest after all
have finished. Without torchrun (no ``WORLD_SIZE``) this is a one-rank no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share_error(self, failed: bool) -> bool:
        """True if any rank failed (so every rank stops instead of waiting at a barrier)."""
        if self.world == 1:
            return failed
        device = f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([int(failed)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def my_batches(self, n_batches: int) -> range:
        """This rank's contiguous share of ``range(n_batches)``."""
        per, extra = divmod(n_batches, self.world)
        start = self.rank * per + min(self.rank, extra)
        return range(start, start + per + (self.rank < extra))


def init_ranks(device: str) -> Ranks:
    """Join the torchrun process group if launched by torchrun; else a single rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: str, ranks: Ranks) -> str:
    """Each rank's GPU under torchrun (``cuda`` → ``cuda:<local rank>``); CPU unchanged."""
    return f"cuda:{ranks.local_rank}" if device == "cuda" and ranks.world > 1 else device


def close(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
