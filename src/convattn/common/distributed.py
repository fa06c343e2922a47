"""Data parallelism over processes started by torchrun: the process group, once.

    torchrun --nproc-per-node N -m convattn caption ...   # N processes on this machine
    convattn caption --nproc N ...                       # the same, launched by `launch`

torchrun gives every process RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`init` reads them and joins the group (gloo on CPU, NCCL on CUDA, each process on the GPU
of its LOCAL_RANK). Without them, or with WORLD_SIZE 1, nothing is initialised and every
helper here is the identity or a no-op, so a single-process run computes exactly what it
did before this module existed.

Who does what in a data-parallel run: every rank trains on its slice of each global batch
(`shard`), DistributedDataParallel averages the gradients, and rank 0 (`is_main`) alone
decodes, scores, logs and writes files; the others wait for it in the next collective.
Small Python objects (a loaded checkpoint, a result, feature shards) travel through a
gloo group even when training uses NCCL, so they never need a GPU copy.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from convattn.common.errors import UserError

# rank 0 decodes and scores while the others wait in a collective: give it time
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device
    objects: object  # the gloo process group that carries Python objects


_world: World | None = None


def launched() -> bool:
    """True inside a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (once per process) -> this rank's
    device (cuda:LOCAL_RANK on GPUs); else return `device` and initialise nothing."""
    global _world
    if _world is not None:
        return _world.device
    if not launched():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"--device cuda: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                            "GPUs here; start at most one process per GPU (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    objects = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend == "nccl" else dist.group.WORLD
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank, device, objects)
    atexit.register(cleanup)
    if _world.rank != 0:  # one copy of every log line: rank 0's
        logging.getLogger("convattn").setLevel(logging.WARNING)
    return device


def cleanup() -> None:
    """At exit: leave the process group while the interpreter is whole. Objects that still
    hold the group (a DistributedDataParallel wrapper caught in a reference cycle) are
    collected first: left to the interpreter's teardown, gloo's worker threads can outlive
    it and abort the process after a finished run."""
    global _world
    if _world is not None and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _world = None


def world() -> World | None:
    """The process group's facts, or None in a single-process run."""
    return _world


def size() -> int:
    return _world.size if _world else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that scores, logs and writes files."""
    return _world is None or _world.rank == 0


def is_local_main() -> bool:
    """The first process on this machine: the one that writes machine-local caches."""
    return _world is None or _world.local_rank == 0


def barrier() -> None:
    if _world:
        dist.barrier(group=_world.objects)


def broadcast(obj):
    """Rank 0's `obj` on every rank (pickled); `obj` itself in a single process."""
    if _world is None:
        return obj
    box = [obj if _world.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=_world.objects)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order; [obj] in a single process."""
    if _world is None:
        return [obj]
    out = [None] * _world.size
    dist.all_gather_object(out, obj, group=_world.objects)
    return out


def all_true(flag: bool) -> bool:
    """True when `flag` holds on every rank (ranks must agree before taking a code path
    that has collectives in it)."""
    return all(all_gather(bool(flag)))


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of every rank's list of floats (all of the same length)."""
    if _world is None:
        return values
    return [sum(column) for column in zip(*all_gather(list(values)))]


def rows(n: int) -> range:
    """This rank's contiguous share of n items (the first n % size ranks get one more)."""
    share, extra = divmod(n, size())
    rank = _world.rank if _world else 0
    lo = rank * share + min(rank, extra)
    return range(lo, lo + share + (rank < extra))


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a global batch [B] (contiguous, sizes as even as possible;
    empty when B < size for the last ranks); the batch itself in a single process."""
    if _world is None:
        return batch
    part = rows(len(batch))
    return batch[part.start:part.stop]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around `model` in a data-parallel run (it broadcasts rank 0's
    parameters, then averages gradients in backward); the model itself otherwise."""
    if _world is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [_world.device.index] if _world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def seed_rank(seed: int) -> None:
    """Give every rank but 0 its own random stream (dropout masks), derived from the run's
    seed; call after the model is built, so every rank starts from the same weights."""
    if _world is not None and _world.rank > 0:
        torch.manual_seed(seed * 1_000_003 + _world.rank)


def rng_states() -> list | None:
    """Every rank's random state (common.runs.rng_state), gathered for rank 0's
    checkpoint; None in a single process."""
    if _world is None:
        return None
    from convattn.common.runs import rng_state

    return all_gather(rng_state())


def restore_rng(states: list | None) -> bool:
    """Put this rank's random state back from `rng_states()`'s list -> whether it could
    (a checkpoint written by as many ranks)."""
    if _world is None or not states or len(states) != _world.size:
        return False
    from convattn.common.runs import set_rng_state

    set_rng_state(states[_world.rank])
    return True


def launch(nproc: int, argv: list[str]) -> None:
    """`python -m convattn ARGV` as nproc processes on this machine, through torchrun's own
    launcher (torch.distributed.run, standalone rendezvous on a free local port): the same
    environment, worker supervision and failure report as `torchrun`, without needing the
    torchrun script on PATH. A failed worker becomes one UserError after its own output."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module",
                                         "convattn", *argv])
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM: the launcher has stopped the workers
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # the launcher then stopped the others
        raise UserError(f"--nproc {nproc}: process of rank {rank} failed (exit code {failure.exitcode}); "
                        "its output is above; finished epochs are saved, the same command continues") from None
