"""torch.distributed helpers: DDP launched by torchrun (gloo on CPU, NCCL on CUDA).

Every helper is a no-op on a single process, so the same code path serves 1 and N processes.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return whether we did.

    CPU runs use gloo so NCCL is never initialised without a GPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def shutdown(wait: bool = True) -> None:
    """Leave the process group cleanly: wait for every rank (unless after an error), then destroy
    it. A rank that exits with the group alive can abort in the backend's threads (``terminate
    called without an active exception``), and torchrun then kills the ranks still writing."""
    if is_distributed():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_list(items: list[Any]) -> list[Any]:
    """Concatenate a picklable list from every rank, in rank order."""
    if not is_distributed():
        return list(items)
    gathered: list[list[Any]] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, list(items))
    return [x for part in gathered for x in part]


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value of ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging losses)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size()


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r+W, r+2W, ... with no padding.

    torch's DistributedSampler pads the last batch with repeated samples so every rank has the same
    length; that would count some validation images twice. Shards may differ in length by one;
    evaluators gather per-sample results, so no collective runs per batch.
    """

    def __init__(self, length: int, num_replicas: int | None = None, rank_: int | None = None) -> None:
        self.length = length
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = rank() if rank_ is None else rank_

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))
