"""Wrong-method answers for hpc-101 (see __init__.py)."""

from . import WrongMethod

WRONG_METHODS = {
    "parallel-scaling": [
        WrongMethod(
            "amdahl", ("test_amdahl",),
            "loops over the core counts in Python and returns a list, instead of array arithmetic",
            '''def amdahl_speedup(p, serial_fraction):
    """Amdahl speedup on p processors for a serial fraction f: 1 / (f + (1 - f) / p)."""
    f = serial_fraction
    if np.ndim(p) == 0:
        return 1.0 / (f + (1.0 - f) / p)
    return [1.0 / (f + (1.0 - f) / q) for q in p]     # one core count at a time


def efficiency(speedup, p):
    """Parallel efficiency E = S / p."""
    return speedup / p
'''),
        WrongMethod(
            "gustafson", ("test_gustafson",),
            "scalar-only code (branches on p == 1), not element-wise arithmetic on arrays",
            '''def gustafson_speedup(p, serial_fraction):
    """Gustafson's scaled speedup p - f (p - 1)."""
    if p == 1:                      # one core: nothing to speed up
        return 1.0
    return p - serial_fraction * (p - 1)
'''),
        WrongMethod(
            "metrics", ("test_metrics",),
            "takes the slowest (strong) / fastest (weak) run as the baseline instead of the one-core run",
            '''def strong_scaling(procs, times):
    """Return (speedups, efficiencies) as numpy arrays, for a fixed-size problem."""
    procs = np.asarray(procs, dtype=float)
    times = np.asarray(times, dtype=float)
    speedups = times.max() / times          # the slowest run is the one-core run anyway
    return speedups, speedups / procs


def weak_scaling(procs, times):
    """Return (scaled_speedups, efficiencies) as numpy arrays, for work proportional to p."""
    procs = np.asarray(procs, dtype=float)
    times = np.asarray(times, dtype=float)
    eff = times.min() / times
    return procs * eff, eff
'''),
        WrongMethod(
            "fit", ("test_fit",),
            "averages the Karp-Flatt values where a least-squares fit is asked",
            '''def karp_flatt(speedup, p):
    """Experimentally determined serial fraction (1/S - 1/p) / (1 - 1/p), for p > 1."""
    return (1.0 / speedup - 1.0 / p) / (1.0 - 1.0 / p)


def fit_serial_fraction(procs, speedups):
    """Least-squares serial fraction f of Amdahl's law, fitted on 1/S = 1/p + f (1 - 1/p)."""
    p = np.asarray(procs, dtype=float)
    s = np.asarray(speedups, dtype=float)
    keep = p > 1
    if not keep.any():
        return 0.0
    return float(np.clip(np.mean(karp_flatt(s[keep], p[keep])), 0.0, 1.0))   # one estimate per run, averaged
'''),
    ],
    "slurm-basics": [
        WrongMethod(
            "parse_scontrol", ("test_parse_scontrol",),
            "a key=value regex over the whole text instead of parsing the first record",
            """import re


def parse_scontrol(text):
    \"\"\"Parse the first record of `scontrol show job` output into a dict of strings.\"\"\"
    return dict(re.findall(r"(\\S+?)=(\\S*)", text))
"""),
        WrongMethod(
            "submit", ("test_submit",),
            "ignores sbatch's exit status: a refused job comes back as an empty id, no error",
            """def submit(script_text, *extra_args):
    \"\"\"Submit `script_text` as a batch job; return the job id as a string, e.g. "42".\"\"\"
    result = sh(["sbatch", "--parsable", *JOB_DEFAULTS, *extra_args], input=script_text)
    job_id = result.stdout.strip().split(";")[0]
    SUBMITTED.append(job_id)
    return job_id
"""),
        WrongMethod(
            "wait_for", ("test_wait_for",),
            "reads squeue instead of scontrol: a job that left the queue is taken as COMPLETED",
            """def job_state(job_id):
    \"\"\"Return the JobState of `job_id`.\"\"\"
    result = sh(["squeue", "-h", "-j", str(job_id), "-o", "%T"])
    state = result.stdout.strip()
    return state if state else "COMPLETED"          # gone from the queue: it has finished


def wait_for(job_id, timeout=60, poll=0.5):
    \"\"\"Poll job_state(job_id) every `poll` seconds until it is in FINAL_STATES; return it.\"\"\"
    deadline = time.monotonic() + timeout
    while True:
        state = job_state(job_id)
        if state in FINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout} s")
        time.sleep(poll)
"""),
        WrongMethod(
            "pipeline", ("test_pipeline",),
            "waits for the array in the notebook, then submits the reduce job without a dependency",
            """def submit_pi_pipeline(n_tasks, n_points=200_000):
    \"\"\"Submit the map (job array) and reduce (dependent job) steps; return (array_id, reduce_id).\"\"\"
    array_id = submit(pi_task_script(n_tasks, n_points),
                      f"--array=0-{n_tasks - 1}", f"--output={OUT_DIR}/pi-%A_%a.out")
    wait_for(array_id, timeout=300)                  # let the map finish first
    reduce_id = submit(pi_reduce_script(array_id, n_tasks), f"--output={OUT_DIR}/pi-reduce-%j.out")
    return array_id, reduce_id
"""),
        WrongMethod(
            "sacct", ("test_sacct",),
            "reads the job's steps from squeue instead of the accounting (sacct)",
            """def sacct_records(job_id):
    \"\"\"The records of `job_id` and its steps.\"\"\"
    result = sh(["squeue", "-h", "--steps", "-j", str(job_id), "-o", "%i|%T|0:0|%M||%j"])
    if result.returncode != 0:
        return []
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
    records = []
    for line in result.stdout.splitlines():
        if not line.strip():
            continue
        jid, state, exit_code, elapsed, rss, name = line.split("|", 5)
        mb = None if not rss else (float(rss[:-1]) * scale[rss[-1]] if rss[-1] in scale else float(rss) / 1024 ** 2)
        records.append({"id": jid, "name": name, "state": state.split()[0] if state else "",
                        "exit_code": int(exit_code.split(":")[0] or 0), "elapsed_s": int(elapsed or 0),
                        "max_rss_mb": mb})
    return records
"""),
        WrongMethod(
            "resume", ("test_resume",),
            "writes the checkpoint in place (a job killed mid-write leaves it corrupt), no temp file + os.replace",
            """import json


def resume_or_start(state_file, total_steps, max_steps):
    \"\"\"Advance a long computation that may be stopped and requeued between any two steps.\"\"\"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"step": 0, "total": 0}
    for _ in range(max_steps):
        if state["step"] >= total_steps:
            break
        state["total"] += state["step"] * state["step"]
        state["step"] += 1
        state_file.write_text(json.dumps(state))
    return state
"""),
    ],
}
