"""The kit on an existing cluster: run from the login container, no Docker.

The login container stands in for a real cluster's login node: the kit runs
there with `--target local`, through Slurm's own commands. Scheduling
scenarios pass; fault scenarios are not run, with the reason; the real
check for GRES enforcement finds no real GPU and does not pass.
"""

from __future__ import annotations

import json

from sim.cluster import DockerCluster

SCENARIOS = ["typed-placement", "impossible-requests", "pending-triage", "node-loss",
             "boundary-gres-enforcement"]


def test_the_kit_runs_on_a_login_node_with_real_verdicts(cluster: DockerCluster
                                                         ) -> None:
    run = cluster.exec("login", ["python3", "-m", "sim", "run", "--target", "local",
                                 "--report-dir", "/tmp/real-mode", *SCENARIOS],
                       timeout_s=600)
    assert run.exit_code == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = cluster.exec("login", ["cat", "/tmp/real-mode/run.json"]).check()
    document = json.loads(report.stdout)

    assert document["run"]["mode"] == "real"
    assert "existing Slurm cluster" in document["run"]["target"]
    assert document["run"]["slurm_version"].startswith(("24.", "26."))
    status = {s["name"]: s for s in document["scenarios"]}
    for name in ("typed-placement", "impossible-requests", "pending-triage"):
        assert status[name]["status"] == "passed", status[name]
    assert status["node-loss"]["status"] == "not_run"
    assert "only a cluster the kit created" in status["node-loss"]["reason"]

    claims = {c["id"]: c for c in document["claims"]}
    enforcement = claims["real.slurm-gres-enforcement"]
    assert enforcement["verdict"] == "failed"
    findings = " ".join(o["finding"] for o in enforcement["observations"])
    assert "no GPU driver is loaded" in findings
    assert claims["fake.slurm-gres-scheduling"]["verdict"] == "supported"
    markdown = cluster.exec("login", ["cat", "/tmp/real-mode/report.md"]).check()
    assert "Mode: **real**" in markdown.stdout
