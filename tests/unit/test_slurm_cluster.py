"""The embedded cluster's config and its refusals, without starting daemons."""

import socket

import pytest

from hub import slurm_cluster
from hub.config import load


def test_slurm_conf_declares_gpus_partitions_and_preemption():
    conf = slurm_cluster.render_slurm_conf(load())
    assert f"NodeName={slurm_cluster.node_name()} NodeAddr=127.0.0.1 CPUs=64 RealMemory=65536 Gres=gpu:h200:4" in conf
    assert "PartitionName=gpu Nodes=" in conf and "MaxTime=04:00:00" in conf
    assert "PriorityTier=10 Hidden=YES" in conf and "PreemptMode=CANCEL" in conf
    gres = slurm_cluster.render_gres_conf(load())
    assert "Name=gpu Type=h200 File=/dev/academy-gpu[0-3]" in gres


def test_a_taken_controller_port_is_named(monkeypatch):
    monkeypatch.setattr(slurm_cluster, "controller_ok", lambda: False)
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        cfg = load()
        cfg["slurm"]["ctld_port"] = squatter.getsockname()[1]
        with pytest.raises(slurm_cluster.ClusterError) as e:
            slurm_cluster.start_controller(cfg)
    assert f"port {cfg['slurm']['ctld_port']} (slurmctld) is taken by another program" in str(e.value)
    assert "set slurm.ctld_port in /etc/academy/config.yaml" in str(e.value)


def test_not_root_is_told_to_use_sudo(monkeypatch):
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(slurm_cluster.ClusterError, match="needs root to start its daemons: run `sudo ./academy up`"):
        slurm_cluster.ensure_running(load())
