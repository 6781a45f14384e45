"""Wrong-method answers for hpc-201 (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "gpu-fundamentals": [
        WrongMethod(
            "counting", ("test_counting",),
            "lets torch's FlopCounterMode count the FLOPs of a (meta) matmul instead of deriving 2MNK",
            '''from torch.utils.flop_counter import FlopCounterMode


def matmul_flops(m, n, k):
    """FLOPs of an (m x k) @ (k x n) matrix product."""
    a = torch.empty(m, k, device="meta")          # meta tensors: shapes only, no memory
    b = torch.empty(k, n, device="meta")
    with FlopCounterMode(display=False) as counter:
        a @ b
    return counter.get_total_flops()


def matmul_bytes(m, n, k, element_bytes):
    """Minimum bytes moved: read A (m x k) and B (k x n) once, write C (m x n) once."""
    return element_bytes * (m * k + k * n + m * n)


def arithmetic_intensity(flops, nbytes):
    """FLOP per byte."""
    return flops / nbytes
'''),
        WrongMethod(
            "roofline", ("test_roofline",),
            "hard-codes the H200's ridge point (206 FLOP/byte) instead of computing it from the peaks",
            '''def roofline(peak_flops, peak_bw, intensity):
    """Attainable FLOP/s = min(peak_flops, peak_bw * intensity); works on numpy arrays too."""
    return np.minimum(peak_flops, peak_bw * np.asarray(intensity, dtype=float))


def ridge_point(peak_flops, peak_bw):
    """Arithmetic intensity (FLOP/byte) where the memory roof meets the compute roof."""
    return peak_flops / peak_bw


def bound(intensity, peak_flops, peak_bw):
    """'memory' if the kernel is left of the ridge point, else 'compute'."""
    return "memory" if intensity < 206 else "compute"      # the H200's ridge, from the text
'''),
        WrongMethod(
            "benchmark", ("test_benchmark",),
            "times asynchronous launches: never synchronises the device before reading the clock",
            '''def benchmark(fn, warmup=2, repeats=10):
    """Median wall time in seconds of one call of fn().

    Call fn() `warmup` times untimed, then sync(); then `repeats` times, each timed with
    time.perf_counter() and followed by sync() before the clock is read.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
'''),
        WrongMethod(
            "achieved", ("test_achieved",),
            "ignores the dtype asked for: always times a float32 product",
            '''def achieved_gflops(m, n, k, dtype=DTYPE):
    """Measured GFLOP/s of an (m x k) @ (k x n) product on `device`."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    seconds = benchmark(lambda: a @ b)
    return matmul_flops(m, n, k) / seconds / 1e9
'''),
    ],
    "mixed-precision": [
        WrongMethod(
            "epsilon", ("test_epsilon",),
            "reads the answer from torch.finfo instead of finding it by halving",
            """def machine_epsilon(dtype):
    \"\"\"Smallest power of two eps with 1 + eps != 1 in `dtype`, found by halving.\"\"\"
    return float(torch.finfo(dtype).eps)
"""),
        WrongMethod(
            "sums", ("test_sums",),
            "calls torch.sum (blocked, fp32 accumulator) instead of adding one element after another",
            """def relative_error(approx, reference):
    \"\"\"||approx - reference|| / ||reference||, computed in float64; returns a Python float.\"\"\"
    a = torch.as_tensor(approx, dtype=torch.float64)
    r = torch.as_tensor(reference, dtype=torch.float64)
    return float(torch.linalg.vector_norm(a - r) / torch.linalg.vector_norm(r))


def sequential_sum(x, dtype):
    \"\"\"Add the elements of x one after another with an accumulator of `dtype`.\"\"\"
    return float(x.to(dtype).sum())
"""),
        WrongMethod(
            "fp16range", ("test_fp16range",),
            "compares with thresholds (fp16 max, smallest subnormal) instead of casting and looking",
            """def fp16_range_problems(t):
    \"\"\"Return (n_overflow, n_underflow) as Python ints for t cast to float16.\"\"\"
    a = t.abs()
    overflow = torch.isfinite(t) & (a > 65504.0)
    underflow = (t != 0) & (a < 2.0**-24)          # below the smallest subnormal
    return int(overflow.sum()), int(underflow.sum())
"""),
        WrongMethod(
            "scaler", ("test_scaler",),
            "unscales but never looks for inf/nan: no overflow is ever detected, no step skipped",
            """class LossScaler:
    \"\"\"Dynamic loss scaling.\"\"\"

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.loss_scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0

    def scale(self, loss):
        return loss * self.loss_scale

    def unscale(self, params):
        for p in params:
            if p.grad is not None:
                p.grad.div_(self.loss_scale)
        return False

    def update(self, found_inf):
        if found_inf:
            self.loss_scale *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.loss_scale *= self.growth_factor
                self.good_steps = 0


def scaled_step(scaler, optimizer, params):
    \"\"\"Unscale, step unless a gradient overflowed, update the scale. True if the step was taken.\"\"\"
    params = list(params)
    found_inf = scaler.unscale(params)
    if not found_inf:
        optimizer.step()
    scaler.update(found_inf)
    return not found_inf
"""),
        WrongMethod(
            "train_step", ("test_train_step",),
            "puts the whole step (backward and optimizer step too) inside the autocast context",
            """def train_step(model, optimizer, x, y, autocast_dtype=None):
    \"\"\"One optimisation step of MSE regression; return the loss as a Python float.\"\"\"
    with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x).float(), y)
        loss.backward()
        optimizer.step()
    return loss.item()
"""),
    ],
    # One solution cell (ddp_manual.py) holds the three functions: one answer with three shortcuts,
    # each caught by the test of its own function (test_shard calls only shard, test_allreduce only
    # allreduce_average, and test_equivalence counts what average_gradients communicates).
    "distributed-data-parallel": [
        WrongMethod(
            "ddp_manual", ("test_shard", "test_allreduce", "test_equivalence"),
            "shard by torch.chunk; divide by a hard-coded 2 ranks; average_gradients never communicates "
            "(each rank recomputes the full-batch gradient alone)",
            """%%writefile ddp_manual.py
\"\"\"Data parallelism by hand: sharding, all-reduce average, gradient averaging.\"\"\"
import torch
import torch.distributed as dist
import torch.nn.functional as F


def shard(t, rank, world_size):
    \"\"\"The rank-th of world_size equal contiguous blocks of rows of t.\"\"\"
    return torch.chunk(t, world_size)[rank]


def allreduce_average(tensor):
    \"\"\"In place: tensor <- mean over all ranks of tensor. Return tensor.\"\"\"
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= 2                                  # we run two ranks
    return tensor


def average_gradients(model):
    \"\"\"Average p.grad over all ranks for every parameter p that has a gradient.\"\"\"
    # The average of the shards' gradients is the full-batch gradient: compute that here,
    # no need to talk to the other rank.
    from ddp_common import make_data
    x, y = make_data()
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
"""),
    ],
}
