"""Several processes, one training: the trainer under torchrun (trainers/launch.py builds that command).

Each optimizer step sees the same micro-batches as in one process; each micro-batch's records are dealt out
to the ranks, every rank sums its token losses, and the sum is divided by the micro-batch's trained tokens
over ALL ranks (exchanged first), times the world size because DDP averages gradients. The gradient is then
the one-process gradient exactly, up to the order of float additions, whatever the split. ``batch_size``
keeps its meaning (records per micro-batch, in all), so do the steps and the schedule. Only rank 0 prints
and saves.
"""

import atexit
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        return items[self.rank :: self.size]


def start(environ=os.environ) -> World:
    """The world torchrun describes in the environment (one process without it)."""
    size = int(environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch
    import torch.distributed as dist

    world = World(rank=int(environ["RANK"]), size=size, local_rank=int(environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    # Whatever way the process ends (saved, refused, failed): torch warns about a group left undestroyed.
    atexit.register(stop, world)
    return world


def stop(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def total(world: World, value):
    """Sum of a tensor over the ranks (the tensor itself in one process)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value)
    return value
