"""The `academy` command: bring the platform up or down, check it, run the tests."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spawners import reaper
from spawners.slurm_client import SlurmClient, SlurmError

from . import cli_assessments, cluster_network, hub_process, installer, slurm_cluster
from .workshops import cli as workshop_cli
from .config import ConfigError, load, write_drop_in
from .configurer import platform_tag

ROOT = Path(__file__).resolve().parent.parent


def _print_welcome(cfg: dict, creds: dict[str, str]) -> None:
    url = hub_process.public_url(cfg)
    print()
    print(f"  AI Factory Academy is up: open {url}")
    if creds:
        print("  Demo accounts (user / password / groups):")
        for name, password in creds.items():
            groups = ", ".join(cfg["demo"]["users"].get(name, []))
            print(f"    {name:<10} {password:<14} {groups}")
        print(f"  (kept in {cfg['demo']['credentials_file']}, readable by root only)")
    print(f"  Trainers' gradebook: {url.rstrip('/')}/services/academy-exchange/courses/<course>")
    print(f"  Learner progress:    {url.rstrip('/')}/services/academy-progress/")
    print("  Stop everything with: ./academy down")
    print()


def prepare(cfg: dict, for_tests: bool = False) -> dict[str, str]:
    """Install what is missing and bring Slurm up; returns the demo credentials."""
    installer.require_root("academy")
    installer.ensure_checkout_private()
    installer.ensure_apt_packages(installer.APT_PACKAGES + (installer.TEST_APT_PACKAGES if for_tests else []))
    installer.ensure_proxy()
    installer.ensure_notebook_env(cfg["notebook_env"])
    if for_tests:
        installer.ensure_test_oidc_provider(cfg)
    creds = {}
    if cfg["demo"]["enabled"]:
        creds = installer.ensure_demo_users(cfg["demo"]["users"], cfg["demo"]["credentials_file"])
    if cfg["slurm"]["manage"]:
        installer.ensure_group(cfg["slurm"]["operators_group"])
        installer.say(slurm_cluster.ensure_running(cfg))
        if cfg["demo"]["enabled"]:  # their own-work associations: a demo learner's sbatch works from the start
            slurm_cluster.apply_policy(cfg, cfg["demo"]["users"])
    return creds


def demo_courses(cfg: dict) -> None:
    """Demo only: every catalogue course published once, the demo cohort enrolled in each."""
    from assessments.exchange.store import Store
    from courses.catalogue import load_catalogue

    store = Store.from_config(cfg)
    cohort = cfg["assessments"]["demo_enrolment"]
    todo = []
    for course in load_catalogue(profiles={p["key"] for p in cfg["profiles"]}).values():
        for role in ("learner", "trainer"):
            for user in cohort.get(f"{role}s", []):
                store.enrolment.add(course.id, user, role)
        published = {p["assignment"] for p in store.publications(course.id)}
        todo += [a for a in course.assignments if a.id not in published]
    if todo:  # once, on the first `up`: nbgrader builds each release (a few seconds each), in parallel
        installer.say(f"publishing {len(todo)} demo assignment(s) of the catalogue")
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(store.publish, todo))


def set_nodes(cfg: dict, nodes: int | None) -> dict:
    """The layout `up --nodes N` asks for, kept in a drop-in so that later commands and the hub see
    it too; the configuration reloaded."""
    if nodes is None or nodes == cfg["slurm"]["nodes"]:
        return cfg
    if not cfg["slurm"]["manage"]:
        raise installer.InstallError("--nodes lays out the embedded cluster; with slurm.manage: false the site's "
                                     "Slurm has the nodes it has")
    if hub_process.running_pid(cfg) is not None:
        raise hub_process.HubError(f"the hub is running on a cluster of {cfg['slurm']['nodes']} node(s): stop it "
                                   f"with `./academy down`, then `./academy up --nodes {nodes}`")
    installer.require_root("academy up --nodes")
    path = write_drop_in("50-nodes.yaml", {"slurm": {"nodes": nodes}})
    installer.say(f"the embedded cluster will have {nodes} node(s) (kept in {path})")
    return load()


def cmd_up(args, cfg: dict) -> int:
    cfg = set_nodes(cfg, args.nodes)
    creds = prepare(cfg)
    already = hub_process.running_pid(cfg) is not None
    pid = hub_process.start(cfg)  # first: a taken port is said before minutes of publishing
    installer.say(f"JupyterHub {'already running' if already else 'started'} (pid {pid}), log in {hub_process.log_file(cfg)}")
    if cfg["demo"]["enabled"]:
        demo_courses(cfg)
    _print_welcome(cfg, creds)
    return 0


def cmd_down(args, cfg: dict) -> int:
    installer.require_root("academy down")
    installer.say("JupyterHub stopped" if hub_process.stop(cfg) else "JupyterHub was not running")
    # Sessions outlive a hub restart by design; `down` means down, so end them too.
    try:
        cancelled = asyncio.run(reaper.cancel_all(SlurmClient(bin_dir=cfg["slurm"]["bin_dir"]), platform_tag(cfg)))
        installer.say(f"cancelled {len(cancelled)} session job(s)" if cancelled else "no session jobs were running")
    except SlurmError as e:
        installer.say(f"could not list session jobs ({e}); check `squeue` before stopping Slurm")
    if cfg["slurm"]["manage"]:
        stopped = slurm_cluster.stop(cfg)
        installer.say(f"stopped {', '.join(stopped)}" if stopped else "Slurm daemons were not running")
        removed = cluster_network.remove()
        if removed:
            installer.say(f"removed the try-out cluster's network: {', '.join(removed)}")
    return 0


def cmd_status(args, cfg: dict) -> int:
    pid = hub_process.running_pid(cfg)
    print(f"hub: {'running, pid %d, %s' % (pid, hub_process.public_url(cfg)) if pid else 'stopped'}")
    if cfg["slurm"]["manage"]:
        nodes = "; ".join(f"node {n.name}: {slurm_cluster.node_state(n.name) or 'unknown'}"
                          for n in slurm_cluster.compute_nodes(cfg))
        print(f"slurmctld: {'up' if slurm_cluster.controller_ok() else 'down'}; {nodes}")
    return 0 if pid else 3


def cmd_prepare(args, cfg: dict) -> int:
    prepare(cfg, for_tests=args.for_tests)
    installer.say("installed and started what the platform needs (the hub itself is started by `academy up`)")
    return 0


def cmd_slurm(args, cfg: dict) -> int:
    from .slurm_check import check

    findings = check(cfg)
    for f in findings:
        print(f.line())
    missing = [f for f in findings if not f.ok]
    print(f"\n{len(findings) - len(missing)} of {len(findings)} in place" +
          (f"; {len(missing)} missing (nothing was changed: this check only reads)" if missing else ""))
    return 1 if missing else 0


def cmd_metrics(args, cfg: dict) -> int:
    from .configurer import prometheus_config

    print(prometheus_config(cfg, args.token_file), end="")
    return 0


def cmd_systemd_unit(args, cfg: dict) -> int:
    from .systemd_unit import render_unit

    print(render_unit(cfg), end="")
    return 0


def cmd_backup(args, cfg: dict) -> int:
    from .backup import BackupError, backup

    installer.require_root("academy backup")
    out = Path(args.out or f"academy-backup-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    try:
        manifest = backup(cfg, out)
    except BackupError as e:
        print(f"academy: {e}", file=sys.stderr)
        return 1
    for name, db in manifest["databases"].items():
        installer.say(f"database {name}: " + ("included" if db["included"] else f"NOT included: {db['why']}"))
    installer.say(f"course store, {len(manifest['secrets'])} secret(s), {len(manifest['config'])} config file(s)")
    installer.say(f"backup written to {out.resolve()} (readable by root only)")
    return 0


def cmd_restore(args, cfg: dict) -> int:
    from .backup import BackupError, restore

    installer.require_root("academy restore")
    try:
        manifest = restore(cfg, Path(args.archive), hub_running=hub_process.running_pid(cfg) is not None)
    except BackupError as e:
        print(f"academy: {e}", file=sys.stderr)
        return 1
    installer.say(f"restored the backup of {manifest['created']} (checkout {manifest['checkout']}); "
                  "start the hub with `./academy up`")
    return 0


def cmd_test(args, cfg: dict) -> int:
    prepare(cfg, for_tests=True)
    argv = [sys.executable, "-m", "pytest", *(args.pytest_args or [str(ROOT / "tests")])]
    return subprocess.call(argv, cwd=ROOT)


def cmd_course(args, cfg: dict) -> int:
    from assessments.courseware.validate import validate
    from courses.catalogue import CatalogueError, load_catalogue

    try:
        catalogue = load_catalogue(profiles={p["key"] for p in cfg["profiles"]})
    except CatalogueError as e:
        print(f"academy: course catalogue: {e}", file=sys.stderr)
        return 2
    unknown = [c for c in args.courses if c not in catalogue]
    if unknown:
        print(f"academy: no course {', '.join(unknown)}; the catalogue has: {', '.join(catalogue)}", file=sys.stderr)
        return 2
    courses = [catalogue[c] for c in (args.courses or catalogue)]
    if args.action == "list":
        for c in courses:
            print(f"{c.id:<10} {c.track:<16} {c.level:<13} {len(c.assignments)} assignments  {c.title}")
        return 0
    if args.action == "publish":  # the same as `academy publish COURSE` for each course
        installer.require_root("academy course publish")
        for c in courses:
            args.course, args.assignments, args.command = c.id, [], "publish"
            if cli_assessments.run(args, cfg):
                return 1
        return 0
    python = os.path.join(cfg["notebook_env"], "bin", "python")
    if not os.path.exists(python):
        print(f"academy: the notebook environment {cfg['notebook_env']} is missing: run ./academy prepare", file=sys.stderr)
        return 1
    if args.action == "build":
        return _build_releases(courses, python, Path(args.out))
    reports = validate(courses, python)
    return 1 if any(r.problems for r in reports) else 0


def _build_releases(courses, python: str, out: Path) -> int:
    """Each assignment's learner version into OUT/<course>/<assignment>/, for a trainer to look at."""
    from assessments.courseware.release import ReleaseError, build_release

    for c in courses:
        for a in c.assignments:
            dest = out / c.id / a.id
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                build_release(python, a, dest)
            except ReleaseError as e:
                print(f"academy: {e}", file=sys.stderr)
                return 1
            print(f"built {c.id}/{a.id} -> {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="academy", description="AI Factory Academy platform")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="install what is missing, start Slurm and the hub, print where to open it")
    up.add_argument("--nodes", type=int, choices=range(1, 9), metavar="N",
                    help="compute nodes of the embedded cluster, 1 to 8 (kept for later runs); above 1 each "
                         "in its own network namespace with its own address, as a site's nodes are")
    sub.add_parser("down", help="stop the hub, its sessions, and the embedded Slurm")
    sub.add_parser("status", help="what is running")
    prep = sub.add_parser("prepare", help="install what is missing and start Slurm, without starting the hub")
    prep.add_argument("--for-tests", action="store_true", help="also install what the tests need (chromium)")
    course = sub.add_parser("course", help="trainer tools for the course catalogue")
    course.add_argument("action", choices=["list", "validate", "build", "publish"],
                        help="list the courses, validate their assignments, build their releases (into --out), "
                             "or publish them to the course's learners")
    course.add_argument("courses", nargs="*", help="course ids (default: all)")
    course.add_argument("--out", default="releases", help="where `build` writes the releases (default: ./releases)")
    slurm = sub.add_parser("slurm", help="the Slurm cluster the platform uses")
    slurm.add_argument("action", choices=["check"], help="check: read the cluster's accounts, QOS, partitions and "
                       "settings and say what the platform needs that is missing (changes nothing)")
    metrics = sub.add_parser("metrics", help="monitoring: print a Prometheus scrape configuration for the hub "
                                             "and its services")
    metrics.add_argument("action", choices=["prometheus-config"])
    metrics.add_argument("--token-file", help="where Prometheus reads the academy-metrics token (default: the "
                                              "hub's own copy in its state folder)")
    back = sub.add_parser("backup", help="write the databases (SQLite), the course store, the hub's secrets and "
                                         "the config into one root-only archive")
    back.add_argument("--out", help="the archive to write (default: academy-backup-<date>.tar.gz here)")
    rest = sub.add_parser("restore", help="put a backup's parts back where the config says (the hub stopped)")
    rest.add_argument("archive")
    sub.add_parser("systemd-unit", help="print a systemd unit that runs the hub as a service (install it in "
                                        "/etc/systemd/system/academy-hub.service)")
    cli_assessments.add_parsers(sub)
    workshop_cli.add_parser(sub)
    sub.add_parser("test", help="run the test suite (installs and starts what the tests need); "
                                "further arguments go to pytest")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    try:
        cfg = load()
        if args.command in cli_assessments.COMMANDS:
            installer.require_root(f"academy {args.command}")  # the course store is root's only
            return cli_assessments.run(args, cfg)
        if args.command == "workshop":
            installer.require_root("academy workshop")  # it makes Unix accounts and reservations
            return workshop_cli.run(args, cfg)
        handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "prepare": cmd_prepare,
                   "course": cmd_course, "slurm": cmd_slurm, "metrics": cmd_metrics, "systemd-unit": cmd_systemd_unit,
                   "backup": cmd_backup, "restore": cmd_restore,
                   "test": cmd_test}[args.command]
        return handler(args, cfg)
    except ConfigError as e:
        print(f"academy: invalid configuration: {e}", file=sys.stderr)
        return 2
    except (installer.InstallError, slurm_cluster.ClusterError, hub_process.HubError) as e:
        print(f"academy: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
