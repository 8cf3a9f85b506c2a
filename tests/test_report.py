"""Reports of a run: JUnit XML and the JSON document, read back as a CI would."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from sim.expect import FAILED, NOT_RUN, PASSED, ExpectationResult
from sim.report import junit_xml, run_document, write_json, write_junit
from sim.runner import JobEvidence, ScenarioResult

WRONG_POOL = "a100-job (job 12) runs on a node of pool h100"
NOT_RUN_REASON = (
    "needs fleet 'large', the cluster runs 'default' (switch with: sim fleet use large)"
)


def passed() -> ScenarioResult:
    return ScenarioResult(
        name="typed-placement",
        description="A typed request lands on its type.",
        claims=["fake.slurm-gres-scheduling", "fake.heterogeneous-fleet"],
        status=PASSED,
        expectations=[
            ExpectationResult("two-a100 (job 3) holds 2 a100 GPU(s)", PASSED,
                              "2 a100 on a100-1 (IDX [0, 1])", "2 a100 GPU(s)"),
            ExpectationResult("two-a100 (job 3) runs on a100-1", PASSED, ["a100-1"],
                              "a100-1"),
        ],
        jobs=[JobEvidence("two-a100", "alice", 3, label="3", state="RUNNING",
                          nodes=["a100-1"],
                          gpus=[{"node": "a100-1", "type": "a100", "count": 2,
                                 "indices": [0, 1]}])],
        duration_s=4.5,
    )


def failed() -> ScenarioResult:
    return ScenarioResult(
        name="wrong-expectation",
        description="An A100 job is wrongly expected on the H100 pool.",
        claims=["fake.slurm-gres-scheduling"],
        status=FAILED,
        expectations=[
            ExpectationResult(WRONG_POOL, FAILED, "pool a100 (node a100-1)", "h100"),
            ExpectationResult("a100-job (job 12) holds 1 a100 GPU(s)", PASSED,
                              "1 a100 on a100-1 (IDX [0])", "1 a100 GPU(s)"),
            ExpectationResult("a100-job (job 12) is COMPLETED", FAILED, "RUNNING",
                              "COMPLETED"),
        ],
        duration_s=2.25,
    )


def not_run() -> ScenarioResult:
    return ScenarioResult(
        name="large-only",
        description="Needs the large fleet.",
        claims=["fake.queue-contention"],
        status=NOT_RUN,
        reason=NOT_RUN_REASON,
    )


def suite_of(results: list[ScenarioResult]) -> ET.Element:
    return ET.fromstring(junit_xml(results))


def case_of(suite: ET.Element, name: str) -> ET.Element:
    (case,) = [c for c in suite.iter("testcase") if c.get("name") == name]
    return case


# ---- JUnit XML ----------------------------------------------------------------


def test_junit_counts_tests_failures_and_skips() -> None:
    suite = suite_of([passed(), failed(), not_run()])

    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "3", "1", "1")
    assert suite.get("time") == "6.75"
    assert [c.get("name") for c in suite.iter("testcase")] == [
        "typed-placement", "wrong-expectation", "large-only"]


def test_junit_failure_message_names_the_first_failed_expectation() -> None:
    case = case_of(suite_of([passed(), failed()]), "wrong-expectation")

    (failure,) = case.findall("failure")

    assert failure.get("message") == WRONG_POOL
    assert failure.text is not None
    assert failure.text.splitlines() == [
        f"{WRONG_POOL}: expected 'h100', observed 'pool a100 (node a100-1)'",
        "a100-job (job 12) is COMPLETED: expected 'COMPLETED', observed 'RUNNING'",
    ]
    assert case.find("skipped") is None


def test_junit_skipped_message_is_the_reason_it_did_not_run() -> None:
    case = case_of(suite_of([not_run()]), "large-only")

    (skipped,) = case.findall("skipped")

    assert skipped.get("message") == NOT_RUN_REASON
    assert case.find("failure") is None


def test_junit_passed_case_has_no_failure_and_lists_its_checks() -> None:
    case = case_of(suite_of([passed()]), "typed-placement")

    assert case.find("failure") is None and case.find("skipped") is None
    assert case.get("time") == "4.50"
    out = case.findtext("system-out")
    assert out is not None
    assert out.splitlines() == [
        "claims: fake.slurm-gres-scheduling, fake.heterogeneous-fleet",
        "passed: two-a100 (job 3) holds 2 a100 GPU(s) "
        "(observed: 2 a100 on a100-1 (IDX [0, 1]))",
        "passed: two-a100 (job 3) runs on a100-1 (observed: ['a100-1'])",
    ]


def test_junit_failure_without_a_failed_expectation_gives_the_reason() -> None:
    stopped = failed()
    stopped.expectations = []
    stopped.reason = "waited 60s for job a in state RUNNING; last seen: a PENDING"

    case = case_of(suite_of([stopped]), "wrong-expectation")

    failure = case.find("failure")
    assert failure is not None and failure.get("message") == stopped.reason


def test_junit_keeps_markup_in_messages_as_text() -> None:
    odd = not_run()
    odd.reason = "needs <gpu> & \"quotes\" 'here'"

    skipped = case_of(suite_of([odd]), "large-only").find("skipped")

    assert skipped is not None and skipped.get("message") == odd.reason


def test_junit_of_no_scenarios_is_an_empty_suite() -> None:
    suite = suite_of([])

    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "0", "0", "0")
    assert suite.find("testcase") is None


def test_write_junit_writes_the_same_xml(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "junit.xml"

    write_junit([failed()], path)

    assert path.read_text() == junit_xml([failed()])
    assert sorted(p.name for p in path.parent.iterdir()) == ["junit.xml"]


# ---- the JSON document --------------------------------------------------------


def written(tmp_path: Path, results: list[ScenarioResult]) -> dict:
    path = tmp_path / "out" / "run.json"
    write_json(run_document(results), path)
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def test_json_document_holds_each_scenario_with_its_expectations(
    tmp_path: Path,
) -> None:
    document = written(tmp_path, [passed(), failed(), not_run()])

    scenarios = document["scenarios"]
    assert [(s["name"], s["status"]) for s in scenarios] == [
        ("typed-placement", PASSED), ("wrong-expectation", FAILED),
        ("large-only", NOT_RUN)]
    assert scenarios[0]["claims"] == [
        "fake.slurm-gres-scheduling", "fake.heterogeneous-fleet"]
    assert scenarios[1]["expectations"][0] == {
        "text": WRONG_POOL, "status": FAILED, "observed": "pool a100 (node a100-1)",
        "expected": "h100"}
    assert [e["status"] for e in scenarios[1]["expectations"]] == [
        FAILED, PASSED, FAILED]
    assert scenarios[0]["expectations"][1]["observed"] == ["a100-1"]


def test_json_document_keeps_the_reason_and_job_evidence(tmp_path: Path) -> None:
    scenarios = written(tmp_path, [passed(), not_run()])["scenarios"]

    assert scenarios[1]["reason"] == NOT_RUN_REASON
    assert scenarios[1]["expectations"] == []
    (job,) = scenarios[0]["jobs"]
    assert (job["name"], job["job_id"], job["nodes"]) == ("two-a100", 3, ["a100-1"])
    assert job["gpus"] == [{"node": "a100-1", "type": "a100", "count": 2,
                            "indices": [0, 1]}]


def test_json_document_writes_values_json_lacks_as_text(tmp_path: Path) -> None:
    result = passed()
    result.expectations[0].observed = datetime(2026, 12, 3, 16, 38, 23, tzinfo=UTC)

    (expectation, _) = written(tmp_path, [result])["scenarios"][0]["expectations"]

    assert expectation["observed"] == "2026-12-03 16:38:23+00:00"


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("old")

    write_json(run_document([not_run()]), path)

    assert json.loads(path.read_text())["scenarios"][0]["name"] == "large-only"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
