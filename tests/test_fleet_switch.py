"""Switching fleets: one command, and Slurm then reports the new fleet, its
policy applied; accounting survives the restart, and the policy scenarios
pass on the policy preset as on the default fleet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim import paths
from sim.cli import presets, use_fleet
from sim.cluster import DockerCluster, wait_until
from sim.expect import PASSED
from sim.fleet import load_fleet
from sim.ledger import load_ledger
from sim.runner import Runner
from sim.scenario import load_scenario
from sim.slurm import Slurm

POLICY_SCENARIOS = ["gpu-quota", "preemption", "fairshare", "shards",
                    "accounting-outage"]


def fleet_as_slurm_sees_it(slurm: Slurm) -> dict[str, tuple]:
    return {n.name: (n.gpus, n.partitions, n.cpus, n.shards) for n in slurm.nodes()}


def fleet_as_spec_says(name: str) -> dict[str, tuple]:
    fleet = load_fleet(presets()[name])
    return {
        n.name: ({n.pool.gpu.type: n.pool.gpu.count} if n.pool.gpu else {},
                 tuple(fleet.partitions_of(n.pool)), n.pool.cpus, n.pool.shards)
        for n in fleet.nodes()
    }


def associations(slurm: Slurm) -> set[tuple[str, str]]:
    """(account, user) of every user association slurmdbd holds."""
    result = slurm.transport.run(
        ["sacctmgr", "-n", "-P", "show", "association", "format=account,user"])
    return {tuple(line.split("|")) for line in result.check().stdout.splitlines()
            if line.split("|")[-1]}


@pytest.fixture(scope="module")
def policy_fleet(cluster: DockerCluster, slurm: Slurm) -> Iterator[int]:
    """The cluster switched to the policy preset; yields a job id that ran
    before the switch. The default fleet comes back afterwards."""
    env_file = paths.PROJECT / ".env"
    saved = env_file.read_text() if env_file.exists() else None
    job_id = slurm.submit(["--gres=gpu:1", "--job-name=before-switch"],
                          "#!/bin/bash\ntrue\n", user="carol")
    wait_until(lambda: any(r["job_id"] == job_id and r["state"]["current"] ==
                           ["COMPLETED"] for r in slurm.accounting([job_id])),
               what="the job's accounting record", timeout_s=60)
    try:
        use_fleet(load_fleet(presets()["policy"]), restart=True)
        yield job_id
    finally:
        use_fleet(load_fleet(presets()["default"]), restart=True)
        if saved is None:
            env_file.unlink(missing_ok=True)
        else:
            env_file.write_text(saved)
    assert fleet_as_slurm_sees_it(slurm) == fleet_as_spec_says("default")
    # Switching back applied the default fleet's policy: the preset's own
    # account and QOS are gone.
    assert ("interns", "carol") not in associations(slurm)
    assert "debug" not in slurm.qos_names()


def test_switching_reshapes_the_cluster_and_applies_its_policy(
        policy_fleet: int, slurm: Slurm) -> None:
    assert fleet_as_slurm_sees_it(slurm) == fleet_as_spec_says("policy")
    assert ("interns", "carol") in associations(slurm)
    assert "debug" in slurm.qos_names()


def test_accounting_survives_down_and_up(policy_fleet: int, slurm: Slurm) -> None:
    # Job ids start again after the switch; the old job is the one so named.
    (record,) = [r for r in slurm.accounting([policy_fleet])
                 if r["name"] == "before-switch"]

    assert record["name"] == "before-switch"
    assert record["state"]["current"] == ["COMPLETED"]


@pytest.mark.parametrize("name", POLICY_SCENARIOS)
def test_policy_scenario_passes_on_the_policy_preset(
        name: str, policy_fleet: int, cluster: DockerCluster, slurm: Slurm) -> None:
    runner = Runner(slurm, cluster, fleet=cluster.fleet())
    scenario = load_scenario(paths.SCENARIOS / f"{name}.yaml", load_ledger().ids())

    result = runner.run(scenario)

    failures = [f"{e.text}: expected {e.expected!r}, observed {e.observed!r}"
                for e in result.expectations if not e.passed]
    assert result.status == PASSED, "\n".join(failures) or result.reason
