"""Verdicts per ledger claim, computed from runs built here."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.expect import FAILED, NOT_RUN, PASSED, ExpectationResult
from sim.ledger import load_ledger
from sim.lint import lint_paths
from sim.report import RunInfo, write_reports
from sim.runner import JobEvidence, ScenarioResult
from sim.verdicts import verdicts

LEDGER = load_ledger()
PROBE_FINDING = {"control": "device-access", "finding": "every GPU device file, given "
                 "or not, reached the kernel and found no driver (ENXIO)",
                 "observed": {}, "enforcement_observed": False}


def scenario(name: str, claims: list[str], status: str = PASSED,
             observations: list[dict] | None = None) -> ScenarioResult:
    ok = status != FAILED
    result = ScenarioResult(name, f"{name} scenario", claims, status,
                            reason="needs fleet 'large'" if status == NOT_RUN else "")
    if status != NOT_RUN:
        result.expectations = [ExpectationResult("a check", PASSED if ok else FAILED,
                                                 "seen", "wanted")]
    result.observations = observations or []
    return result


def by_id(results: list[ScenarioResult]) -> dict[str, str]:
    return {v.claim.id: v.verdict for v in verdicts(LEDGER, results)}


def test_every_ledger_row_gets_a_verdict_in_order() -> None:
    found = verdicts(LEDGER, [])
    assert [v.claim.id for v in found] == [c.id for c in LEDGER.claims]
    assert len(found) == 22
    assert [len(LEDGER.group(g)) for g in ("fake", "real", "neither")] == [8, 6, 8]


def test_a_passing_scenario_supports_its_claims() -> None:
    verdict = by_id([scenario("a", ["fake.slurm-gres-scheduling"])])
    assert verdict["fake.slurm-gres-scheduling"] == "supported"
    assert verdict["fake.pending-triage"] == "no_evidence"


def test_one_failing_scenario_fails_the_claim_however_many_pass() -> None:
    verdict = by_id([scenario("a", ["fake.queue-contention"]),
                     scenario("b", ["fake.queue-contention"], FAILED)])
    assert verdict["fake.queue-contention"] == "failed"


def test_a_scenario_that_did_not_run_is_no_evidence() -> None:
    found = {v.claim.id: v for v in verdicts(
        LEDGER, [scenario("a", ["fake.fractional-gpu"], NOT_RUN)])}
    assert found["fake.fractional-gpu"].verdict == "no_evidence"
    assert "needs fleet 'large'" in found["fake.fractional-gpu"].explanation


def test_kubernetes_rows_are_listed_as_not_exercised_never_dropped() -> None:
    found = {v.claim.id: v for v in verdicts(LEDGER, [])}
    assert found["fake.k8s-gpu-scheduling"].verdict == "no_evidence"
    assert "not exercised by this kit" in found["fake.k8s-gpu-scheduling"].explanation


def test_real_claims_are_not_provable_here_even_when_their_scenario_passes() -> None:
    found = {v.claim.id: v for v in verdicts(LEDGER, [
        scenario("boundary", ["real.slurm-gres-enforcement"],
                 observations=[PROBE_FINDING])])}
    enforcement = found["real.slurm-gres-enforcement"]
    assert enforcement.verdict == "not_provable_here"
    assert enforcement.observations[0]["finding"] == PROBE_FINDING["finding"]
    assert enforcement.observations[0]["scenario"] == "boundary"
    assert "Slurm on a GPU machine" in enforcement.explanation
    assert enforcement.as_dict()["requires"] == "Slurm on a GPU machine"


def test_without_a_boundary_control_the_real_claim_says_so() -> None:
    found = {v.claim.id: v for v in verdicts(LEDGER, [])}
    enforcement = found["real.slurm-gres-enforcement"]
    assert enforcement.verdict == "not_provable_here"
    assert enforcement.observations == []
    assert "no boundary control ran" in enforcement.explanation


def test_neither_rows_are_neither_mode_whatever_ran() -> None:
    verdict = by_id([scenario("odd", ["neither.nccl-multinode"])])
    assert {v for k, v in verdict.items() if k.startswith("neither.")} == {
        "neither_mode"}


@pytest.fixture()
def reports(tmp_path: Path) -> Path:
    results = [scenario("a", ["fake.slurm-gres-scheduling"]),
               scenario("boundary", ["real.slurm-gres-enforcement"],
                        observations=[PROBE_FINDING])]
    results[0].jobs = [JobEvidence(
        "job-a", "alice", 7, label="7", state="RUNNING", nodes=["a100-1"],
        gpus=[{"node": "a100-1", "type": "a100", "count": 2, "indices": [0, 1]}],
        start_time="2026-12-03T10:00:00+00:00", end_time="2026-12-03T10:00:30+00:00")]
    run = RunInfo("2026-12-03T10:00:00+00:00", "a test", "fake", "24.11.5",
                  "default", 31.0)
    write_reports(tmp_path, results, verdicts(LEDGER, results), run,
                  [("a100-1", i) for i in range(4)])
    return tmp_path


def test_reports_hold_every_claim_and_pass_the_vocabulary_lint(reports: Path) -> None:
    markdown = (reports / "report.md").read_text()
    for claim in LEDGER.claims:
        assert claim.text in markdown
    assert "Outside both modes" in markdown
    assert PROBE_FINDING["finding"] in (reports / "report.html").read_text()
    assert (reports / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lint_paths([reports]) == []
