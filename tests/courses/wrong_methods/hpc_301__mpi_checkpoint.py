"""Wrong-method answers for hpc-301's mpi-halo and checkpoint-profile (see __init__.py)."""

from . import WrongMethod

_P2P_BLOCKING_SENDS = '''%%writefile mpi_p2p.py
"""Point-to-point messages with mpi4py."""
import numpy as np
from mpi4py import MPI


def ring_pass(comm, obj):
    right = (comm.rank + 1) % comm.size
    left = (comm.rank - 1) % comm.size
    comm.send(obj, dest=right)          # every rank sends first: fine while MPI buffers the message
    return comm.recv(source=left)


def shift_right(comm, a):
    right = (comm.rank + 1) % comm.size
    left = (comm.rank - 1) % comm.size
    received = np.empty_like(a)
    comm.Sendrecv(a, dest=right, recvbuf=received, source=left)
    return received


def ping_pong(comm, nbytes, reps):
    buf = np.zeros(nbytes, dtype=np.uint8)
    if comm.rank > 1:
        return None
    t0 = MPI.Wtime()
    for _ in range(reps):
        if comm.rank == 0:
            comm.Send(buf, dest=1)
            comm.Recv(buf, source=1)
        else:
            comm.Recv(buf, source=0)
            comm.Send(buf, dest=0)
    return (MPI.Wtime() - t0) / (2 * reps) if comm.rank == 0 else None
'''

_COLLECTIVES_BY_HAND = '''%%writefile mpi_collectives.py
"""Collectives with mpi4py."""
import numpy as np
from mpi4py import MPI


def share_config(comm, config):
    if comm.rank == 0:
        for r in range(1, comm.size):
            comm.send(config, dest=r)
        return config
    return comm.recv(source=0)


def scatter_rows(comm, data):
    if comm.rank == 0:
        m = data.shape[0] // comm.size
        for r in range(1, comm.size):
            comm.send(data[r * m:(r + 1) * m].shape, dest=r)
            comm.Send(np.ascontiguousarray(data[r * m:(r + 1) * m]), dest=r)
        return data[:m].copy()
    local = np.empty(comm.recv(source=0))
    comm.Recv(local, source=0)
    return local


def global_mean_max(comm, local):
    if comm.rank == 0:
        total, count, biggest = float(local.sum()), local.size, float(local.max())
        for r in range(1, comm.size):
            s, c, m = comm.recv(source=r)
            total, count, biggest = total + s, count + c, max(biggest, m)
        result = (total / count, biggest)
        for r in range(1, comm.size):
            comm.send(result, dest=r)
        return result
    comm.send((float(local.sum()), local.size, float(local.max())), dest=0)
    return comm.recv(source=0)


def sum_to_root(comm, local):
    if comm.rank == 0:
        total = np.array(local, dtype=np.float64)
        for r in range(1, comm.size):
            total += comm.recv(source=r)
        return total
    comm.send(np.asarray(local), dest=0)
    return None
'''

_HALO_ALLGATHER = '''%%writefile mpi_halo.py
"""Block decomposition and halo exchange for a 1-D grid."""
import numpy as np
from mpi4py import MPI


def block_range(n, rank, size):
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def neighbours(comm):
    left = comm.rank - 1 if comm.rank > 0 else MPI.PROC_NULL
    right = comm.rank + 1 if comm.rank < comm.size - 1 else MPI.PROC_NULL
    return left, right


def exchange_halos(comm, u):
    blocks = comm.allgather(u.copy())     # every rank's whole block, to read two numbers
    if comm.rank > 0:
        u[0] = blocks[comm.rank - 1][-2]
    if comm.rank < comm.size - 1:
        u[-1] = blocks[comm.rank + 1][1]
'''

_HEAT_NO_EXCHANGE = '''%%writefile mpi_heat.py
"""The 1-D heat equation with a block decomposition and halo exchange."""
import numpy as np
from mpi4py import MPI

from mpi_halo import block_range, exchange_halos


def heat_step(u, a):
    new = u.copy()
    new[1:-1] = u[1:-1] + a * (u[:-2] - 2 * u[1:-1] + u[2:])
    return new


def heat_mpi(comm, u0, a, steps):
    n = u0.size - 2
    start, stop = block_range(n, comm.rank, comm.size)
    u = np.array(u0[start:stop + 2], dtype=np.float64)
    for _ in range(steps):
        u = heat_step(u, a)               # the ghosts keep their initial values: no exchange
    blocks = comm.gather(u[1:-1], root=0)
    if comm.rank != 0:
        return None
    return np.concatenate([u0[:1], *blocks, u0[-1:]])
'''

_HEAT_GATHER_EVERY_STEP = '''%%writefile mpi_heat.py
"""The 1-D heat equation with a block decomposition and halo exchange."""
import numpy as np
from mpi4py import MPI

from mpi_halo import block_range, exchange_halos


def heat_step(u, a):
    new = u.copy()
    new[1:-1] = u[1:-1] + a * (u[:-2] - 2 * u[1:-1] + u[2:])
    return new


def heat_mpi(comm, u0, a, steps):
    n = u0.size - 2
    start, stop = block_range(n, comm.rank, comm.size)
    full = np.array(u0, dtype=np.float64)
    for _ in range(steps):
        mine = heat_step(full, a)[start + 1:stop + 1]
        full = np.concatenate([u0[:1], *comm.allgather(mine), u0[-1:]])   # the whole grid, every step
    return full if comm.rank == 0 else None
'''

_TIMING_GUESSED = '''%%writefile mpi_timing.py
"""Time per step of the halo-exchange loop, and the time spent communicating."""
import numpy as np
from mpi4py import MPI

from mpi_halo import exchange_halos
from mpi_heat import heat_step


def time_steps(comm, n_local, steps, a=0.25, warmup=3):
    u = np.random.default_rng(comm.rank).random(n_local + 2)
    for _ in range(warmup):
        exchange_halos(comm, u)
        u = heat_step(u, a)
    comm.Barrier()
    t0 = MPI.Wtime()
    for _ in range(steps):
        exchange_halos(comm, u)
        u = heat_step(u, a)
    t_step = comm.allreduce((MPI.Wtime() - t0) / steps, op=MPI.MAX)
    # the share from the alpha-beta model (2 messages of 2 us) instead of a measurement
    return {"t_step": t_step, "t_comm": min(t_step, 4e-6)}
'''

WRONG_METHODS = {
    "mpi-halo": [
        WrongMethod("sol-p2p", ("test-p2p",),
                    "ring_pass: every rank sends before it receives (deadlocks once the message is too large to buffer)",
                    _P2P_BLOCKING_SENDS),
        WrongMethod("sol-collectives", ("test-collectives",),
                    "collectives written as loops of send/recv at the root",
                    _COLLECTIVES_BY_HAND),
        WrongMethod("sol-halo", ("test-halo",),
                    "halo exchange by allgather of every rank's whole block",
                    _HALO_ALLGATHER),
        WrongMethod("sol-heat", ("test-heat",),
                    "rank-local solver that never exchanges halos",
                    _HEAT_NO_EXCHANGE),
        WrongMethod("sol-heat", ("test-heat",),
                    "gathers the whole grid to every rank each step and steps it there",
                    _HEAT_GATHER_EVERY_STEP),
        WrongMethod("sol-timing", ("test-timing",),
                    "communication time from a model (a guessed constant), not measured around the exchange",
                    _TIMING_GUESSED),
    ],
}


_STATE_NO_RNG = '''%%writefile ckpt_state.py
"""Capture and restore the complete state of a training run."""
import copy
import random

import numpy as np
import torch


def capture_state(run):
    return copy.deepcopy({                 # weights, optimizer, scheduler, position: but no generators
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "step": run.step, "epoch": run.epoch, "batch": run.batch, "losses": list(run.losses),
    })


def restore_state(run, state):
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.epoch, run.batch = state["step"], state["epoch"], state["batch"]
    run.losses = list(state["losses"])
'''

_SAVE_IN_PLACE = '''%%writefile ckpt_io.py
"""Atomic checkpoint files."""
import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(state, path):
    path = Path(path)
    with open(path, "wb") as f:            # straight onto the checkpoint: a kill leaves half a file
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(path):
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, weights_only=False)
'''

_RESUME_MODEL_ONLY = '''%%writefile ckpt_train.py
"""A training loop that resumes exactly from its last checkpoint."""
from ckpt_io import load_checkpoint, save_checkpoint
from ckpt_state import capture_state, restore_state
from train_common import Run, next_indices, train_step


def train(ckpt_path, total_steps, ckpt_every, seed=0, should_stop=None):
    run = Run(seed)
    state = load_checkpoint(ckpt_path)
    if state is not None:                  # the weights and the position, with a fresh optimizer and generators
        run.model.load_state_dict(state["model"])
        run.step, run.epoch, run.batch, run.losses = state["step"], state["epoch"], state["batch"], list(state["losses"])
    while run.step < total_steps:
        train_step(run, next_indices(run))
        saved = False
        if run.step % ckpt_every == 0:
            save_checkpoint(capture_state(run), ckpt_path)
            saved = True
        if should_stop is not None and should_stop(run):
            if not saved:
                save_checkpoint(capture_state(run), ckpt_path)
            return run
    save_checkpoint(capture_state(run), ckpt_path)
    return run
'''

_EXIT_IN_HANDLER = '''%%writefile ckpt_signal.py
"""Stop cleanly on a signal, and ask Slurm to requeue the job."""
import os
import signal
import subprocess
import sys

REQUEUE_EXIT = 3


class StopOnSignal:
    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.signum = None
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum
        sys.exit(request_requeue())        # leave at once, wherever the loop was: no checkpoint of this step

    def __call__(self, run=None):
        return self.signum is not None


def request_requeue():
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        subprocess.run(["scontrol", "requeue", job_id], check=False)
    return REQUEUE_EXIT
'''

_TOP_BY_TOTAL = '''def top_self_op(prof, key="self_cpu_time_total"):
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = key.replace("self_", "")      # inclusive time: wrappers include what they call
    return max(ops, key=lambda e: getattr(e, total)).key
'''

_FAST_WITH_ITEM = '''def fast_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return torch.tensor(loss.item())       # a host sync every step, for a number nobody reads yet
'''

_MEASURE_ONCE = '''def measure(fn, warmup=3, reps=10, sync=None):
    t0 = time.perf_counter()               # no warm-up, no sync: the mean launch time of the loop
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps
'''

WRONG_METHODS["checkpoint-profile"] = [
    WrongMethod("sol-state", ("test-state",),
                "checkpoint without the random generators' states (torch, numpy, random)", _STATE_NO_RNG),
    WrongMethod("sol-atomic", ("test-atomic",),
                "checkpoint written in place (no temporary file and os.replace)", _SAVE_IN_PLACE),
    WrongMethod("sol-resume", ("test-resume", "test-signal"),
                "resume that restores the model and position but not the optimizer, scheduler and generators",
                _RESUME_MODEL_ONLY),
    WrongMethod("sol-signal", ("test-signal",),
                "signal handler that exits at once instead of stopping at a step boundary with a checkpoint",
                _EXIT_IN_HANDLER),
    WrongMethod("sol-top-op", ("test-top-op",),
                "top operator by total (inclusive) time instead of self time", _TOP_BY_TOTAL),
    WrongMethod("sol-fast", ("test-fast",),
                "batched step that still calls .item() every step", _FAST_WITH_ITEM),
    WrongMethod("sol-bench", ("test-bench",),
                "mean over a loop without warm-up or synchronisation", _MEASURE_ONCE),
]
