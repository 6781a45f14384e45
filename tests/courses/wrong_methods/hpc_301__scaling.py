"""Wrong-method answers for hpc-301's multi-process-training and collectives (see __init__.py)."""

from . import WrongMethod

_ENV_LOCALID = r'''%%writefile launch_env.py
"""Rank, world size, local rank and rendezvous address, from torchrun's or Slurm's variables."""
import re


def first_host(nodelist):
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], nodelist[:end])


def dist_env(environ):
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return {"rank": int(environ["RANK"]), "world_size": int(environ["WORLD_SIZE"]),
                "local_rank": int(environ.get("LOCAL_RANK", 0)),
                "master_addr": environ["MASTER_ADDR"], "master_port": int(environ["MASTER_PORT"]),
                "launcher": "torchrun"}
    if "SLURM_PROCID" in environ:
        nodes = environ.get("SLURM_STEP_NODELIST") or environ["SLURM_JOB_NODELIST"]
        # the rank taken from the task's index on its node: right on one node only
        return {"rank": int(environ["SLURM_LOCALID"]), "world_size": int(environ["SLURM_NTASKS"]),
                "local_rank": int(environ["SLURM_LOCALID"]),
                "master_addr": environ.get("MASTER_ADDR") or first_host(nodes),
                "master_port": int(environ.get("MASTER_PORT") or 10000 + int(environ["SLURM_JOB_ID"]) % 20000),
                "launcher": "slurm"}
    return {"rank": 0, "world_size": 1, "local_rank": 0, "master_addr": "127.0.0.1",
            "master_port": 29500, "launcher": "single"}
'''

_SHARD_LIBRARY = r'''%%writefile sharding.py
"""Which sample indices each rank processes: the rule of torch.utils.data.DistributedSampler."""
import math

import torch
from torch.utils.data import DistributedSampler


def shard_indices(n, rank, world_size, shuffle=True, seed=0, epoch=0, drop_last=False):
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle,
                                 seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    return list(sampler)
'''

_TRAIN_ALONE = r'''%%writefile train_ddp.py
"""Data-parallel training, one process per rank, under torchrun or Slurm."""
import argparse
import datetime
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from launch_env import dist_env
from mpt_common import make_data, make_model, save_checkpoint, write_rank_log
from sharding import shard_indices


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--global-batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    env = dist_env(os.environ)
    dist.init_process_group("gloo", init_method=f"tcp://{env['master_addr']}:{env['master_port']}",
                            rank=env["rank"], world_size=env["world_size"],
                            timeout=datetime.timedelta(seconds=120))
    try:
        model = make_model()                 # no DDP, no all_reduce: each rank trains on its shard alone
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        x_all, y_all = make_data(args.global_batch)
        losses, samples = [], []
        dist.barrier()
        t0 = time.perf_counter()
        for step in range(args.steps):
            idx = shard_indices(args.global_batch, env["rank"], env["world_size"], seed=0, epoch=step)
            opt.zero_grad()
            loss = F.mse_loss(model(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            samples.append(idx)
        train_s = time.perf_counter() - t0
        if env["rank"] == 0:
            save_checkpoint(args.run_dir, model, args.steps)
        write_rank_log(args.run_dir, env, model, losses, samples, train_s)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
'''

_LAUNCH_ONE_TASK = r'''def batch_script(run_dir, ntasks, *args):
    # N cores for one task: one process, world size 1, nothing distributed
    lines = ["#!/bin/bash",
             "#SBATCH --ntasks=1",
             f"#SBATCH --cpus-per-task={ntasks}",
             f"#SBATCH --mem-per-cpu={MEM_PER_TASK}",
             "#SBATCH --time=00:05:00",
             "export OMP_NUM_THREADS=1",
             f"cd {shlex.quote(str(HERE))}",
             "srun --kill-on-bad-exit=1 " + " ".join(shlex.quote(c) for c in mpt_common.command(run_dir, *args))]
    return "\n".join(lines) + "\n"


def run_job(tag, ntasks, global_batch, steps=STEPS, lr=LR, timeout=300):
    run_dir = mpt_common.fresh_run_dir(RUNS / tag)
    job_id = submit(batch_script(run_dir, ntasks, *mpt_common.train_args(global_batch, steps, lr)))
    state = wait_for(job_id, timeout=timeout)
    if state != "COMPLETED":
        raise RuntimeError(f"job {job_id} ended {state}")
    return {"job_id": job_id, "state": state, "logs": mpt_common.load_run(run_dir)}
'''

_SCALING_RANK0 = r'''def scaling_table(runs):
    rows = []
    for run in runs:
        step_s = run["logs"][0]["train_s"] / len(run["logs"][0]["losses"])   # rank 0's clock only
        rows.append({"ntasks": run["ntasks"], "global_batch": run["global_batch"],
                     "per_rank_batch": run["global_batch"] // run["ntasks"], "step_s": step_s,
                     "samples_per_s": run["global_batch"] / step_s})
    single = {row["global_batch"]: row["step_s"] for row in rows if row["ntasks"] == 1}
    for row in rows:
        t1, tw = single.get(row["global_batch"]), single.get(row["per_rank_batch"])
        row["strong"] = None if t1 is None else t1 / (row["ntasks"] * row["step_s"])
        row["weak"] = None if tw is None else tw / row["step_s"]
    return rows
'''

WRONG_METHODS = {
    "multi-process-training": [
        WrongMethod("sol-env", ("test-env",), "rank from SLURM_LOCALID: right on one node, wrong on two",
                    _ENV_LOCALID),
        WrongMethod("sol-shard", ("test-shard",), "calls DistributedSampler instead of writing its rule",
                    _SHARD_LIBRARY),
        WrongMethod("sol-train", ("test-train",), "'distributed' training that never averages gradients",
                    _TRAIN_ALONE),
        WrongMethod("sol-launch", ("test-launch",), "asks for N cores in one task instead of N tasks",
                    _LAUNCH_ONE_TASK),
        WrongMethod("sol-scaling", ("test-scaling",), "times the run by rank 0's clock, not the slowest rank",
                    _SCALING_RANK0),
    ],
}

_RING_LIBRARY = r'''%%writefile ring.py
"""Ring all-reduce from point-to-point messages."""
import torch
import torch.distributed as dist


def ring_all_reduce(tensor):
    # the library's all-reduce, and the byte count of the formula
    p = dist.get_world_size()
    dist.all_reduce(tensor)
    return 2 * (p - 1) * tensor.numel() * tensor.element_size() // p
'''

_TREE_LIBRARY = r'''%%writefile tree.py
"""Binomial-tree all-reduce: reduce to rank 0, then broadcast, from point-to-point messages."""
import torch
import torch.distributed as dist


def tree_all_reduce(tensor):
    # the library's tree-shaped collectives instead of messages
    dist.reduce(tensor, dst=0)
    dist.broadcast(tensor, src=0)
    n_bytes = tensor.numel() * tensor.element_size()
    rank, p = dist.get_rank(), dist.get_world_size()
    low = rank & -rank if rank else 1 << (p - 1).bit_length()
    children = sum(1 for m in (low >> k for k in range(1, low.bit_length())) if rank + m < p)
    return n_bytes * ((rank > 0) + children)
'''

_TIMING_NO_BARRIER = r'''%%writefile timing.py
"""Timing a collective: barrier, warm-up, repetitions, median."""
import statistics
import time

import torch
import torch.distributed as dist


def time_all_reduce(tensor, reps=10, warmup=2):
    # repetitions and a median, but no barrier: each sample includes the wait for the other rank
    for _ in range(warmup):
        dist.all_reduce(tensor)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dist.all_reduce(tensor)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
'''

_FIT_AVERAGE = r'''def fit_alpha_beta(sizes_bytes, times_s, p):
    # beta from the average time per byte, alpha from the smallest message: no fit
    n = np.asarray(sizes_bytes, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    b = float(np.mean(t / n))
    a = float(t.min())
    return a / (2 * (p - 1)), b * p / (2 * (p - 1))
'''

_MODEL_WHOLE_MESSAGE = r'''def ring_bytes(n_bytes, p):
    # a naive ring passes the whole tensor at every step
    return 2 * (p - 1) * n_bytes


def ring_time(n_bytes, p, alpha, beta):
    return 2 * (p - 1) * (alpha + n_bytes * beta)


def tree_time(n_bytes, p, alpha, beta):
    return 2 * math.ceil(math.log2(p)) * (alpha + n_bytes * beta)


def crossover_bytes(p, alpha, beta):
    steps = math.ceil(math.log2(p))
    denominator = 2 * steps * beta - 2 * (p - 1) * beta
    if p <= 3 or denominator >= 0:
        return 0.0
    return max(0.0, (2 * (p - 1) * alpha - 2 * steps * alpha) / denominator)
'''

WRONG_METHODS["collectives"] = [
    WrongMethod("sol-ring", ("test-ring",), "the 'ring' calls dist.all_reduce and returns the formula's bytes",
                _RING_LIBRARY),
    WrongMethod("sol-tree", ("test-tree",), "the 'tree' calls dist.reduce and dist.broadcast",
                _TREE_LIBRARY),
    WrongMethod("sol-timing", ("test-timing",), "times each all_reduce without a barrier before it",
                _TIMING_NO_BARRIER),
    WrongMethod("sol-fit", ("test-fit",), "beta as the average of time/size, alpha as the smallest time",
                _FIT_AVERAGE),
    WrongMethod("sol-model", ("test-model",), "ring model that sends the whole message at each of its 2(p-1) steps",
                _MODEL_WHOLE_MESSAGE),
]
