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


def test_a_two_node_layout_puts_each_node_on_its_own_address_with_its_own_gpus(tmp_path):
    import yaml
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"slurm": {"nodes": 2, "node_gpu_types": ["l40s"], "gpus": 2}}))
    cfg = load(path)
    conf = slurm_cluster.render_slurm_conf(cfg, cgroups=True)
    assert "SlurmctldHost=" + slurm_cluster.node_name() + "(10.77.0.1)" in conf
    assert "NodeName=node1 NodeAddr=10.77.0.11 CPUs=64 RealMemory=65536 Gres=gpu:h200:2" in conf
    assert "NodeName=node2 NodeAddr=10.77.0.12 CPUs=64 RealMemory=65536 Gres=gpu:l40s:2" in conf
    assert "PartitionName=gpu Nodes=node1,node2 " in conf
    # one slurmd per node on this machine: each its own spool, pid and log file
    assert "SlurmdSpoolDir=/var/spool/academy-slurm/d/%n" in conf and "SlurmdPidFile=/run/academy-slurm/slurmd-%n.pid" in conf
    # commands inside a node reach slurmdbd on the service address, not the node's own loopback
    assert "AccountingStorageHost=10.77.0.1" in conf
    gres = slurm_cluster.render_gres_conf(cfg)
    assert "NodeName=node1 Name=gpu Type=h200 File=/dev/academy-gpu[0-1]" in gres
    assert "NodeName=node2 Name=gpu Type=l40s File=/dev/academy-gpu[2-3]" in gres
    # The hub follows: reached from the nodes on the service address, servers at their node's.
    assert cfg["hub"]["hub_ip"] == "10.77.0.1" and cfg["hub"]["hub_connect_url"] == "http://10.77.0.1:8081"
    assert cfg["slurm"]["server_ip"] == "0.0.0.0"
    assert cfg["slurm"]["node_hosts"] == {"node1": "10.77.0.11", "node2": "10.77.0.12"}


def test_what_the_operator_set_stays_and_a_bad_network_is_named(tmp_path):
    import yaml

    from hub.config import ConfigError
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"slurm": {"nodes": 3, "network": "10.9.8.0/24", "node_hosts": {"node1": "n1.site"}},
                                    "hub": {"hub_ip": "10.9.8.200"}}))
    cfg = load(path)
    assert cfg["hub"]["hub_ip"] == "10.9.8.200" and cfg["slurm"]["node_hosts"] == {"node1": "n1.site"}
    assert "NodeName=node3 NodeAddr=10.9.8.13 " in slurm_cluster.render_slurm_conf(cfg, cgroups=False)
    path.write_text(yaml.safe_dump({"slurm": {"nodes": 2, "network": "10.9.8.1/24"}}))
    with pytest.raises(ConfigError, match=r"slurm.network: 10.9.8.1/24 has host bits set; accepted: a network address"):
        load(path)
    path.write_text(yaml.safe_dump({"slurm": {"nodes": 9}}))
    with pytest.raises(ConfigError, match=r"slurm.nodes: 9 is greater than the maximum of 8"):
        load(path)


def test_up_with_nodes_keeps_the_layout_in_a_drop_in(tmp_path, monkeypatch):
    import yaml

    from hub import cli, hub_process, installer
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"hub": {"port": 9000}}))
    monkeypatch.setenv("ACADEMY_CONFIG", str(path))
    monkeypatch.setattr(hub_process, "running_pid", lambda cfg: None)
    monkeypatch.setattr(installer, "require_root", lambda what: None)
    cfg = cli.set_nodes(load(path), 2)
    assert cfg["slurm"]["nodes"] == 2 and cfg["hub"]["port"] == 9000
    assert load(path)["slurm"]["nodes"] == 2   # later commands, and the hub, see it too
    assert (tmp_path / "config.d" / "50-nodes.yaml").exists()
    assert cli.set_nodes(load(path), 1)["slurm"]["nodes"] == 1
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"slurm": {"manage": False}}))
    with pytest.raises(installer.InstallError, match=r"--nodes lays out the embedded cluster; with slurm.manage: "
                                                     r"false the site's Slurm has the nodes it has"):
        cli.set_nodes(load(site), 2)
    monkeypatch.setattr(hub_process, "running_pid", lambda cfg: 4242)
    with pytest.raises(hub_process.HubError, match=r"the hub is running on a cluster of 1 node\(s\): stop it with "
                                                    r"`./academy down`, then `./academy up --nodes 2`"):
        cli.set_nodes(load(path), 2)
