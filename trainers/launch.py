"""How a worker starts a trainer: one process, or torchrun over the GPUs it is given.

A worker's GPUs are the ones in its ``CUDA_VISIBLE_DEVICES`` (docs/training.md: one dedicated ``training``
worker per set of GPUs). A trainer that speaks DDP (its module is listed here) is started under torchrun with
one process per visible GPU when there are two or more; every other command is returned unchanged. The job
runner calls ``launch_command`` in one place and knows nothing else about it.
"""

from collections.abc import Mapping, Sequence

# Trainers whose code runs under torchrun (rank 0 logs and saves; the others compute).
DISTRIBUTED_MODULES = frozenset({"trainers.lora_sft"})


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """The devices ``CUDA_VISIBLE_DEVICES`` lists, up to CUDA's own stop at the first invalid entry ("-1")."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return []
    devices = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    return devices


def launch_command(command: Sequence[str], *, environ: Mapping[str, str]) -> list[str]:
    """``command`` as the worker should start it for the GPUs visible in ``environ``."""
    command = list(command)
    gpus = visible_gpus(environ)
    is_module = len(command) >= 3 and command[1] == "-m" and command[2] in DISTRIBUTED_MODULES
    if len(gpus) < 2 or not is_module:
        return command
    python, _, module, *arguments = command
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous on a free local port: several jobs' launches never meet
        f"--nproc-per-node={len(gpus)}",
        "-m",
        module,
        *arguments,
    ]
