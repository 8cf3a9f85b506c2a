"""Every scenario of the default library, as a test against the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cluster import DockerCluster
from sim.expect import FAILED, PASSED
from sim.ledger import load_ledger
from sim.paths import SCENARIOS
from sim.runner import Runner
from sim.scenario import load_scenario
from sim.slurm import Slurm

LIBRARY = sorted(SCENARIOS.glob("*.yaml"))
WRONG = Path(__file__).parent / "scenarios" / "wrong-expectation.yaml"


@pytest.fixture(scope="session")
def runner(slurm: Slurm, cluster: DockerCluster) -> Runner:
    return Runner(slurm, cluster, fleet=cluster.fleet())


def test_the_library_is_not_empty() -> None:
    assert len(LIBRARY) >= 10


@pytest.mark.parametrize("path", LIBRARY, ids=[p.stem for p in LIBRARY])
def test_scenario_passes(path: Path, runner: Runner) -> None:
    scenario = load_scenario(path, load_ledger().ids())
    result = runner.run(scenario)
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
