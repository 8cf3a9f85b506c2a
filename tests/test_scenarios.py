"""Every scenario of the default library, as a test against the cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cluster import DockerCluster
from sim.expect import FAILED, PASSED
from sim.ledger import load_ledger
from sim.lint import lint_paths
from sim.paths import SCENARIOS
from sim.report import RunInfo, timeline_bars, write_reports
from sim.runner import Runner, ScenarioResult
from sim.scenario import load_scenario
from sim.slurm import Slurm
from sim.verdicts import verdicts

LIBRARY = sorted(SCENARIOS.glob("*.yaml"))
WRONG = Path(__file__).parent / "scenarios" / "wrong-expectation.yaml"


@pytest.fixture(scope="session")
def runner(slurm: Slurm, cluster: DockerCluster) -> Runner:
    return Runner(slurm, cluster, fleet=cluster.fleet())


@pytest.fixture(scope="session")
def library_results() -> list[ScenarioResult]:
    """The results of the library's scenarios, as the tests below run them."""
    return []


def test_the_library_is_not_empty() -> None:
    assert len(LIBRARY) >= 10


@pytest.mark.parametrize("path", LIBRARY, ids=[p.stem for p in LIBRARY])
def test_scenario_passes(path: Path, runner: Runner,
                        library_results: list[ScenarioResult]) -> None:
    scenario = load_scenario(path, load_ledger().ids())
    result = runner.run(scenario)
    library_results.append(result)
    failures = [f"{e.text}: expected {e.expected!r}, observed {e.observed!r}"
                for e in result.expectations if not e.passed]
    assert result.status == PASSED, "\n".join(failures) or result.reason
    assert result.expectations


def test_a_wrong_expectation_shows_expected_and_observed(runner: Runner) -> None:
    result = runner.run(load_scenario(WRONG, load_ledger().ids()))

    assert result.status == FAILED
    by_text = {e.text: e for e in result.expectations}
    wrong = next(e for t, e in by_text.items() if "pool h100" in t)
    assert wrong.status == FAILED
    assert wrong.expected == "h100"
    assert "pool a100" in wrong.observed
    right = next(e for t, e in by_text.items() if "holds 1 a100" in t)
    assert right.status == PASSED


def test_the_run_yields_every_report_with_honest_verdicts(
        library_results: list[ScenarioResult], runner: Runner, tmp_path: Path) -> None:
    assert len(library_results) == len(LIBRARY)
    found = verdicts(load_ledger(), library_results)
    run = RunInfo("now", "the test cluster", "fake", runner.slurm.version(),
                  runner.fleet.name, 0.0)
    rows = [(n.name, i) for n in runner.fleet.nodes() for i in range(n.pool.gpus)]
    written = write_reports(tmp_path, library_results, found, run, rows)
    assert {p.name for p in written} >= {"report.md", "report.html", "run.json",
                                         "timeline.png"}

    document = json.loads((tmp_path / "run.json").read_text())
    claims = {c["id"]: c for c in document["claims"]}
    assert len(claims) == 22
    assert claims["fake.slurm-gres-scheduling"]["verdict"] == "supported"
    enforcement = claims["real.slurm-gres-enforcement"]
    assert enforcement["verdict"] == "not_provable_here"
    assert {o["control"] for o in enforcement["observations"]} == {
        "device-access", "device-cgroup", "gpu-driver"}
    assert all(c["verdict"] == "neither_mode" for c in claims.values()
               if c["group"] == "neither")
    assert {s["status"] for s in document["scenarios"]} == {"passed"}

    # The timeline draws, for every job, one bar per GPU index it held, on
    # the row of the node Slurm put it on.
    drawn = {(b["scenario"], b["job"], b["node"], b["index"])
             for b in timeline_bars(library_results)}
    held = {(r.name, j.name, g["node"], i) for r in library_results for j in r.jobs
            if j.start_time for g in j.gpus for i in g["indices"]}
    assert drawn == held and held
    assert lint_paths([tmp_path]) == []
