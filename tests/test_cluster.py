"""The running cluster against its fleet spec: nodes, GPUs, jobs, faults."""

from __future__ import annotations

import re
import stat

import pytest

from sim.cluster import DockerCluster, wait_until
from sim.fleet import Fleet
from sim.slurm import Job, NodeInfo, Slurm, SubmitRejected

ENV_SCRIPT = """#!/bin/bash
echo "uid=$(id -u)"
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"
echo "SLURM_JOB_GPUS=${SLURM_JOB_GPUS:-}"
sleep "${HOLD:-0}"
"""


def job_in(slurm: Slurm, job_id: int, states: set[str], timeout_s: float = 60) -> Job:
    def reached() -> Job | None:
        jobs = slurm.job(job_id)
        return jobs[0] if jobs and jobs[0].state in states else None

    return wait_until(reached, what=f"job {job_id} in {sorted(states)}",
                      timeout_s=timeout_s,
                      describe=lambda: str([j.state for j in slurm.job(job_id)]))


def job_output(cluster: DockerCluster, user: str, job_id: int) -> dict[str, str]:
    """What ENV_SCRIPT printed, once it has printed its GPU lines."""
    path = f"/home/{user}/env-{job_id}.out"

    def printed() -> str:
        result = cluster.exec("login", ["cat", path], user=user)
        return result.stdout if "SLURM_JOB_GPUS=" in result.stdout else ""

    text = wait_until(printed, what=f"{path} to be written", timeout_s=30)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def nodes_by_name(slurm: Slurm) -> dict[str, NodeInfo]:
    return {n.name: n for n in slurm.nodes()}


def indices(text: str) -> list[int]:
    return [int(i) for i in text.split(",") if i]


def test_sinfo_equals_the_fleet_spec(slurm: Slurm, default_fleet: Fleet) -> None:
    seen = nodes_by_name(slurm)
    assert sorted(seen) == sorted(n.name for n in default_fleet.nodes())
    for node in default_fleet.nodes():
        pool, info = node.pool, seen[node.name]
        assert info.gpus == ({pool.gpu.type: pool.gpu.count} if pool.gpu else {})
        assert (info.sockets, info.cores_per_socket, info.threads_per_core) == (
            pool.sockets, pool.cores_per_socket, pool.threads_per_core)
        assert info.cpus == pool.cpus
        assert info.real_memory_mb == pool.memory_mb
        assert set(info.features) == set(pool.features)
        assert info.weight == pool.weight
        assert set(info.partitions) == set(default_fleet.partitions_of(pool))
        assert info.base_state == "IDLE"


def test_typed_request_gets_that_type_and_matching_env(
        slurm: Slurm, cluster: DockerCluster, default_fleet: Fleet) -> None:
    job_id = slurm.submit(["--gres=gpu:a100:2", "-o", "env-%j.out",
                           "--export=ALL,HOLD=3"], ENV_SCRIPT, user="alice")
    # Slurm forgets a job's GPU indices when it ends: read them while it runs.
    job = job_in(slurm, job_id, {"RUNNING"})
    assert job_in(slurm, job_id, {"COMPLETED", "FAILED"}).state == "COMPLETED"
    (node,) = job.nodes
    assert default_fleet.pool("a100").name in node
    (gpus,) = job.gpus
    assert (gpus.type, gpus.count, len(gpus.indices)) == ("a100", 2, 2)
    env = job_output(cluster, "alice", job_id)
    assert indices(env["CUDA_VISIBLE_DEVICES"]) == list(gpus.indices)
    assert indices(env["SLURM_JOB_GPUS"]) == list(gpus.indices)
    assert env["uid"] == "2001"


def test_two_jobs_on_one_node_get_disjoint_indices(
        slurm: Slurm, cluster: DockerCluster) -> None:
    options = ["-w", "h100-1", "--gres=gpu:h100:3", "-o", "env-%j.out",
               "--export=ALL,HOLD=30"]
    first = slurm.submit(options, ENV_SCRIPT, user="alice")
    second = slurm.submit(options, ENV_SCRIPT, user="bob")
    try:
        jobs = [job_in(slurm, j, {"RUNNING"}) for j in (first, second)]
        held = [set(job.gpus[0].indices) for job in jobs]
        assert all(len(h) == 3 for h in held)
        assert not held[0] & held[1]
        env = job_output(cluster, "bob", second)
        assert set(indices(env["CUDA_VISIBLE_DEVICES"])) == held[1]
    finally:
        for job_id in (first, second):
            slurm.cancel(job_id)


@pytest.mark.parametrize("request_, message", [
    ("--gres=gpu:a100:5", "Requested node configuration is not available"),
    ("--gres=gpu:h100:9", "Requested node configuration is not available"),
    ("--gres=gpu:b200:1", "Requested node configuration is not available"),
    ("--gres=fpga:1", "Invalid generic resource (gres) specification"),
])
def test_impossible_requests_are_rejected_at_submission(
        slurm: Slurm, request_: str, message: str) -> None:
    with pytest.raises(SubmitRejected) as caught:
        slurm.submit([request_], "#!/bin/bash\ntrue\n", user="alice")
    assert message in caught.value.message


def test_fake_gpus_are_character_devices(cluster: DockerCluster) -> None:
    listing = cluster.exec("a100-1", ["stat", "-c", "%F %t:%T %n",
                                      "/dev/fakegpu/a100-1/nvidia0",
                                      "/dev/fakegpu/a100-1/nvidia3"]).check().stdout
    lines = listing.splitlines()
    assert [ln.split()[-1] for ln in lines] == ["/dev/fakegpu/a100-1/nvidia0",
                                                "/dev/fakegpu/a100-1/nvidia3"]
    # %t:%T is major:minor in hex: 195 is c3.
    assert [ln.split()[-2] for ln in lines] == ["c3:0", "c3:3"]
    assert all(ln.startswith("character special file") for ln in lines)


def test_a_killed_node_goes_down_and_returns_when_restarted(
        slurm: Slurm, cluster: DockerCluster) -> None:
    cluster.kill_node("a100-2")

    def down() -> bool:
        node = nodes_by_name(slurm)["a100-2"]
        return node.base_state == "DOWN" or node.has("NOT_RESPONDING")

    wait_until(down, what="a100-2 not responding", timeout_s=60, interval_s=1)
    assert nodes_by_name(slurm)["a100-1"].base_state == "IDLE"
    cluster.start_node("a100-2")
    wait_until(lambda: nodes_by_name(slurm)["a100-2"].state == ("IDLE",),
               what="a100-2 idle again", timeout_s=90, interval_s=1,
               describe=lambda: str(nodes_by_name(slurm)["a100-2"].state))


def test_secrets_are_per_cluster_and_not_in_the_image(cluster: DockerCluster) -> None:
    mode = cluster.exec("slurmctld", ["stat", "-c", "%a %U", "/etc/slurm/slurm.key"])
    assert mode.check().stdout.split() == ["600", "slurm"]
    image = cluster.service("slurmctld").image
    in_image = cluster.docker.containers.run(
        image, entrypoint=["sh", "-c", "ls /etc/slurm /var/lib/sim 2>&1; true"],
        remove=True).decode()
    assert "slurm.key" not in in_image and "db.password" not in in_image
    dbd = cluster.exec("slurmdbd", ["stat", "-c", "%a", "/etc/slurm/slurmdbd.conf"])
    assert dbd.check().stdout.strip() == "600"


def test_no_port_is_published_beyond_loopback(cluster: DockerCluster) -> None:
    for container in cluster.containers():
        container.reload()
        for bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                assert binding["HostIp"] in ("127.0.0.1", "::1"), container.name


def test_every_device_node_in_gres_conf_exists(cluster: DockerCluster,
                                               default_fleet: Fleet) -> None:
    gres = cluster.exec("slurmctld", ["cat", "/etc/slurm/gres.conf"]).check().stdout
    for line in gres.splitlines():
        match = re.search(r"NodeName=(\S+) .*File=(\S+)", line)
        if not match:
            continue
        node, path = match.groups()
        mode = cluster.exec(node, ["stat", "-c", "%f", path]).check().stdout
        assert stat.S_ISCHR(int(mode.strip(), 16)), path
    gpu_nodes = {n.name for n in default_fleet.nodes() if n.pool.gpu}
    assert gpu_nodes == {m.group(1) for m in re.finditer(r"NodeName=(\S+)", gres)}


def test_policy_is_in_slurmdbd_and_applying_it_again_changes_nothing(
        cluster: DockerCluster, slurm: Slurm, default_fleet: Fleet) -> None:
    again = cluster.exec("login", ["python3", "-m", "sim.policy", "apply",
                                   "/etc/sim/cluster/fleet.json"])

    assert again.exit_code == 0, again.stderr
    assert "already applied" in again.stderr and "sacctmgr " not in again.stderr
    policy = default_fleet.policy
    assert {q.name for q in policy.qos} <= set(slurm.qos_names())
    assert {a.name for a in policy.accounts} <= set(slurm.account_names())


def test_a_user_outside_the_policy_cannot_submit(slurm: Slurm) -> None:
    with pytest.raises(SubmitRejected) as refused:
        slurm.submit(["--gres=gpu:1", "--account=team-b"], "#!/bin/bash\ntrue\n",
                     user="carol")

    assert "Invalid account" in refused.value.message
