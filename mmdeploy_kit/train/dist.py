"""torch.distributed plumbing: launch N ranks with torchrun, join the process group, average gradients.

``launch(job_file, nproc, worker)`` runs ``python -m torch.distributed.run --standalone --nproc_per_node=N -m
WORKER JOB`` (gloo on CPU, nccl when CUDA is visible; ``OMP_NUM_THREADS=1`` per rank
unless set). A rank that fails with an ``MmdkError`` writes it to ``<job>.error.json``; the launcher
re-raises it, so a distributed run fails with the same one-line error as a single-process one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import errors
from ..errors import MmdkError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """This process's rank / world size (``DistInfo()`` when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def init_from_env() -> DistInfo:
    """Join the process group torchrun set up (env:// rendezvous); gloo on CPU, nccl on CUDA."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return current()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def average_gradients(params: Iterable[Any]) -> None:
    """All-reduce (mean) the gradients of ``params`` in one flat buffer; params without grad are skipped
    (every rank runs the same code, so the same params have gradients everywhere)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def error_file(job: Path) -> Path:
    return job.with_name(job.name + ".error.json")


def write_error(job: Path, exc: MmdkError) -> None:
    error_file(job).write_text(json.dumps({"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}))


def launch(job: Path, nproc: int, worker: str, quiet: bool = False) -> None:
    """Run the worker on ``nproc`` local ranks and wait; re-raise a rank's MmdkError in this process."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
           "-m", worker, str(job)]
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.run(cmd, env=env, stdout=out, stderr=out)
    err = error_file(job)
    if err.is_file():
        info = json.loads(err.read_text())
        cls = getattr(errors, info.get("type", ""), None)
        cls = cls if isinstance(cls, type) and issubclass(cls, MmdkError) else MmdkError
        raise cls(info["message"], hint=info.get("hint"))
    if proc.returncode != 0:
        raise MmdkError(f"distributed training failed (torchrun exit code {proc.returncode})",
                        hint="rerun with --nproc 1 to see the error directly")
