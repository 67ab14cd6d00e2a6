"""Several processes (``accelerate launch --num_processes N -m findistill ...``): which process this is, and barriers.

Every findistill command runs the same way under ``accelerate launch`` as in one process. (Several CPU processes:
``accelerate launch --multi_gpu --num_processes N`` on a machine without CUDA, which starts them through torchrun;
``--cpu`` starts one process unless mpirun is set up.) Each process runs the same
stages in the same order, so the collective calls (barriers, the Trainer's DDP) line up; teacher labelling is split
by chunks (chunk i of a list by process i mod N, :meth:`findistill.cache.CachedTeacher.label_shard`), each process
writing only its own cache chunks; every other file is written by the main process alone, and the others read it
only after a barrier. In one process :func:`rank_world` is ``(0, 1)`` and the barriers do nothing.

Built on :class:`accelerate.PartialState`, the state the Trainer's own ``Accelerator`` uses; creating it first
starts the process group (gloo on CPU, NCCL on GPUs) with :data:`BARRIER_TIMEOUT`, and on GPUs makes this process's
GPU the current CUDA device, where the teacher then loads. The Trainer re-creates the state later; the process
group, and its timeout, stay.
"""

from __future__ import annotations

import datetime
from typing import Callable, TypeVar

T = TypeVar("T")

# A barrier waits this long for the slowest process: labelling shards end at different times, and the main process
# alone evaluates, augments and analyses while the others wait. A process that fails ends the launch (accelerate's
# launcher stops the others), so no process waits this long for a dead one.
BARRIER_TIMEOUT = datetime.timedelta(hours=12)


def _state():
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Without CUDA (or under `accelerate launch --cpu`) the processes meet over gloo, as the Trainer's own state
    # does (TrainingArguments.use_cpu). Initialised once; later calls return the same shared state.
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)


def rank_world() -> tuple[int, int]:
    """``(this process's index, number of processes)``; ``(0, 1)`` outside ``accelerate launch``."""
    state = _state()
    return state.process_index, state.num_processes


def is_main() -> bool:
    """True on the process that writes the run folder's files (the only one outside ``accelerate launch``)."""
    return _state().is_main_process


def barrier() -> None:
    """Wait until every process gets here."""
    _state().wait_for_everyone()


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on the main process only, between two barriers: every process has finished reading what ``fn``
    may replace, and every process sees what ``fn`` wrote. ``fn``'s result on the main process, None elsewhere."""
    barrier()
    result = fn() if is_main() else None
    barrier()
    return result
