# The ANCHOR of the benchmarks: stock batchspawner 1.3.0's SlurmSpawner with its default
# settings, on the same JupyterHub 6.1.1, Slurm and machine as the academy hub.
#
# Only what is needed to run at all here is set; everything else is stock:
# - ports, state dir and database, like the academy benchmark hub (values come from the
#   environment the benchmark sets: BENCH_*);
# - the same authentication as the academy hub (PAM, no PAM session), the same users;
# - the session environment the learners can execute, /opt/academy/venv-anchor (stock
#   packages, batchspawner installed there: stock runs `srun batchspawner-singleuser ...`);
# - the `cpu` partition (session_end.py: also the GPU partition, a QOS and a walltime);
# - the same start_timeout / http_timeout as the academy hub in each benchmark.
# scheduler_load.py also sets a stand-in server (BENCH_SESSION_CMD) and points the stock
# status query at a counting wrapper (BENCH_SQUEUE), with stock's default arguments.
#
# Started by the benchmarks as:  jupyterhub -f benchmarks/anchor_jupyterhub_config.py
import os

env = os.environ
state = env["BENCH_STATE_DIR"]
anchor_env = env.get("BENCH_ANCHOR_ENV", "/opt/academy/venv-anchor")

c = get_config()  # noqa: F821 - provided by JupyterHub

# network and state, as the academy hub sets them (hub/configurer.py update_network/update_state)
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(env["BENCH_PORT"])
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env["BENCH_HUB_PORT"])
c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{env['BENCH_HUB_PORT']}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['BENCH_PROXY_API_PORT']}"
c.JupyterHub.db_url = f"sqlite:///{os.path.join(state, 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(state, "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "jupyterhub-proxy.pid")

# authentication: the academy hub's (PAM, no PAM session), for the benchmark's users
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False
c.Authenticator.allowed_users = set(filter(None, env.get("BENCH_USERS", "").split(",")))

# the spawner: stock, default settings
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.req_partition = env.get("BENCH_PARTITION", "cpu")
# session_end.py: the same request as ours' benchmark profile (GPU, QOS, a short walltime)
if env.get("BENCH_OPTIONS"):
    c.SlurmSpawner.req_options = env["BENCH_OPTIONS"]
if env.get("BENCH_RUNTIME"):
    c.SlurmSpawner.req_runtime = env["BENCH_RUNTIME"]
c.Spawner.cmd = [env.get("BENCH_SESSION_CMD") or os.path.join(anchor_env, "bin", "jupyterhub-singleuser")]
c.SlurmSpawner.batchspawner_singleuser_cmd = os.path.join(anchor_env, "bin", "batchspawner-singleuser")
c.Spawner.start_timeout = int(env.get("BENCH_START_TIMEOUT", "300"))
c.Spawner.http_timeout = int(env.get("BENCH_HTTP_TIMEOUT", "120"))
if env.get("BENCH_SQUEUE"):
    # stock's default query, `squeue -h -j {job_id} -o '%T %B'`, through a wrapper that counts calls
    c.SlurmSpawner.batch_query_cmd = env["BENCH_SQUEUE"] + " -h -j {job_id} -o '%T %B'"
