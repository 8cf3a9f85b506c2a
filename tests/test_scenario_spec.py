"""Scenario files: what `load_scenario` accepts, and how it refuses the rest.

Every bad scenario must raise SpecError with one line that starts with the
file and the field path, then says what was wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.errors import SpecError
from sim.ledger import load_ledger
from sim.scenario import FleetRequirement, Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "scenarios").glob("*.yaml"))
KEPT = sorted((ROOT / "tests" / "scenarios").glob("*.yaml"))
CLAIMS = load_ledger().ids()
HEAD = "name: t\ndescription: d\nclaims: [fake.slurm-gres-scheduling]\n"


def scenario(*actions: str, head: str = HEAD) -> str:
    """A scenario of these actions, each one YAML flow item."""
    return head + "actions:\n" + "".join(f"  - {action}\n" for action in actions)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Scenario:
    return load_scenario(write(tmp_path, text), CLAIMS)


def refusal(path: Path) -> str:
    """The message load_scenario raises for `path`, checked to be one line."""
    with pytest.raises(SpecError) as caught:
        load_scenario(path, CLAIMS)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def bad(case: str, text: str, field: str, *fragments: str) -> object:
    """A bad scenario and the field path its message names."""
    return pytest.param(text, field, fragments, id=case)


SUBMIT_A = "submit: {name: a}"
NOT_BEFORE = "was submitted before this action"

BAD_SCENARIOS = [
    # Unknown keys, with the keys allowed at that place.
    bad("unknown-top-key", HEAD + "colour: red\nactions:\n  - submit: {name: a}\n",
        "colour", "unknown key", "allowed: name, description, claims, fleet, actions"),
    bad("unknown-submit-key", scenario("submit: {name: a, gpus: 2}"),
        "actions[0].submit.gpus", "unknown key", "allowed: name, user, gres"),
    bad("unknown-expect-key", scenario(SUBMIT_A, "expect: {job: a, colour: red}"),
        "actions[1].expect.colour", "unknown key", "allowed: job, node, capacity"),
    bad("unknown-wait-key",
        scenario(SUBMIT_A, "wait: {job: a, state: RUNNING, within: 5}"),
        "actions[1].wait.within", "unknown key", "timeout_s"),
    bad("unknown-action", scenario("explode: a100-1"),
        "actions[0].explode", "unknown key", "submit, wait, expect"),
    # One action each.
    bad("two-kinds", HEAD + "actions:\n  - submit: {name: a}\n    cancel: a\n",
        "actions[0]", "give exactly one action of", "(got submit, cancel)"),
    bad("no-kind", scenario("{}"), "actions[0]", "(got none)"),
    bad("no-actions", HEAD + "actions: []\n", "actions", "at least 1 item"),
    # Waits.
    bad("wait-job-and-node",
        scenario(SUBMIT_A, "wait: {job: a, node: a100-1, state: RUNNING}"),
        "actions[1].wait", "give exactly one of job and node"),
    bad("wait-no-subject", scenario("wait: {state: RUNNING}"),
        "actions[0].wait", "give exactly one of job and node"),
    bad("wait-for-nothing", scenario(SUBMIT_A, "wait: {job: a}"),
        "actions[1].wait", "give state, reason or priority_above to wait for"),
    bad("wait-node-reason", scenario("wait: {node: a100-1, reason: Resources}"),
        "actions[0].wait", "reason and priority_above apply to jobs, not nodes"),
    bad("wait-job-state-unknown", scenario(SUBMIT_A, "wait: {job: a, state: RUNING}"),
        "actions[1].wait", "state 'RUNING' is not one of PENDING, RUNNING"),
    bad("wait-node-state-unknown", scenario("wait: {node: a100-1, state: BUSY}"),
        "actions[0].wait", "state 'BUSY' is not one of IDLE, MIXED"),
    bad("wait-job-given-node-state", scenario(SUBMIT_A, "wait: {job: a, state: IDLE}"),
        "actions[1].wait", "state 'IDLE' is not one of PENDING"),
    bad("wait-timeout-zero", scenario(SUBMIT_A, "wait: {job: a, state: RUNNING, "
                                      "timeout_s: 0}"),
        "actions[1].wait.timeout_s", "greater than 0", "(got 0)"),
    # Expectations.
    bad("expect-job-state-unknown", scenario(SUBMIT_A, "expect: {job: a, state: DONE}"),
        "actions[1].expect", "state 'DONE' is not one of PENDING"),
    bad("expect-node-state-unknown",
        scenario("expect: {node: a100-1, state: RESTING}"),
        "actions[0].expect", "state 'RESTING' is not one of IDLE"),
    bad("expect-no-check", scenario(SUBMIT_A, "expect: {job: a}"),
        "actions[1].expect", "nothing to check"),
    bad("expect-two-subjects",
        scenario(SUBMIT_A, "expect: {job: a, node: a100-1, state: RUNNING}"),
        "actions[1].expect", "give exactly one of job, node and capacity"),
    bad("expect-no-subject", scenario("expect: {state: RUNNING}"),
        "actions[0].expect", "give exactly one of job, node and capacity"),
    bad("capacity-unknown-key", scenario("expect: {capacity: {cpus: 64}}"),
        "actions[0].expect", "capacity takes gpus and nodes, not ['cpus']"),
    bad("capacity-empty", scenario("expect: {capacity: {}}"),
        "actions[0].expect", "capacity needs gpus or nodes"),
    bad("capacity-with-a-job-check",
        scenario("expect: {capacity: {gpus: 16}, state: IDLE}"),
        "actions[0].expect", "state applies to jobs and nodes, not capacity"),
    bad("capacity-with-flags",
        scenario("expect: {capacity: {gpus: 16}, flags: [DRAIN]}"),
        "actions[0].expect", "flags applies to jobs and nodes, not capacity"),
    bad("node-given-gpus", scenario("expect: {node: a100-1, gpus: 2}"),
        "actions[0].expect", "gpus applies to jobs, not nodes"),
    bad("node-given-on-node", scenario("expect: {node: a100-1, on_node: a100-1}"),
        "actions[0].expect", "on_node applies to jobs, not nodes"),
    bad("job-given-flags", scenario(SUBMIT_A, "expect: {job: a, flags: [DRAIN]}"),
        "actions[1].expect", "flags applies to nodes"),
    bad("started-by-unknown", scenario(SUBMIT_A, "expect: {job: a, started_by: luck}"),
        "actions[1].expect.started_by", "'submit', 'schedule' or 'backfill'",
        "(got 'luck')"),
    # References to jobs not submitted before.
    bad("cancel-unsubmitted", scenario("cancel: b", "submit: {name: b}"),
        "actions[0].cancel", "no job named 'b'", NOT_BEFORE, "(submitted: none yet)"),
    bad("finish-unsubmitted", scenario(SUBMIT_A, "finish: b"),
        "actions[1].finish", "no job named 'b'", "(submitted: a)"),
    bad("wait-unsubmitted", scenario(SUBMIT_A, "wait: {job: [a, b], state: RUNNING}"),
        "actions[1].wait.job", "no job named 'b'", NOT_BEFORE),
    bad("expect-unsubmitted", scenario(SUBMIT_A, "expect: {job: b, state: RUNNING}"),
        "actions[1].expect.job", "no job named 'b'", NOT_BEFORE),
    bad("disjoint-with-unsubmitted",
        scenario(SUBMIT_A, "expect: {job: a, disjoint_with: 'b[1]'}"),
        "actions[1].expect.disjoint_with", "no job named 'b'", NOT_BEFORE),
    bad("starts-before-unsubmitted",
        scenario(SUBMIT_A, "expect: {job: a, starts_before: b}"),
        "actions[1].expect.starts_before", "no job named 'b'", NOT_BEFORE),
    bad("starts-after-end-of-unsubmitted",
        scenario(SUBMIT_A, "expect: {job: a, starts_after_end_of: b}"),
        "actions[1].expect.starts_after_end_of", "no job named 'b'"),
    bad("reference-not-a-name", scenario(SUBMIT_A, "cancel: 'A!'"),
        "actions[1]", "job reference 'A!' must be a job name, or name[N]"),
    # Submissions.
    bad("duplicate-job-name", scenario(SUBMIT_A, "submit: {name: a, user: bob}"),
        "actions[1].submit.name", "job name 'a' is used twice"),
    bad("placeholder-unsubmitted",
        scenario("submit: {name: a, options: ['--dependency=afterok:{job:b}']}"),
        "actions[0].submit.options", "{job:b} names no job submitted before"),
    bad("placeholder-names-itself",
        scenario("submit: {name: a, options: ['--dependency=afterok:{job:a}']}"),
        "actions[0].submit.options", "{job:a}"),
    bad("array-spec", scenario("submit: {name: a, array: 0-3x}"),
        "actions[0].submit.array", "must match", "(got '0-3x')"),
    bad("array-spec-words", scenario("submit: {name: a, array: all}"),
        "actions[0].submit.array", "must match", "(got 'all')"),
    bad("duration-negative", scenario("submit: {name: a, duration_s: -1}"),
        "actions[0].submit.duration_s", "must be at least 0", "(got -1)"),
    bad("job-name-uppercase", scenario("submit: {name: Big}"),
        "actions[0].submit.name", "must match", "(got 'Big')"),
    # The scenario itself.
    bad("no-description", scenario(SUBMIT_A, head=HEAD.replace("description: d\n", "")),
        "description", "required key is missing"),
    bad("empty-description", HEAD.replace("description: d", "description: ''")
        + "actions:\n  - submit: {name: a}\n",
        "description", "at least 1 character"),
    bad("empty-claims",
        scenario(SUBMIT_A, head=HEAD.replace("[fake.slurm-gres-scheduling]", "[]")),
        "claims", "at least 1 item"),
    bad("unknown-claim", scenario(SUBMIT_A, head=HEAD.replace("gres-scheduling",
                                                               "gres-magic")),
        "claims[0]", "unknown claim 'fake.slurm-gres-magic'", "fake.pending-triage"),
    bad("name-with-spaces", scenario(SUBMIT_A, head=HEAD.replace("name: t",
                                                                  "name: my test")),
        "name", "must match", "(got 'my test')"),
]


@pytest.mark.parametrize(("text", "field", "fragments"), BAD_SCENARIOS)
def test_bad_scenario_is_refused_in_one_line(
    tmp_path: Path, text: str, field: str, fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)

    message = refusal(path)

    assert message.startswith(f"{path}: {field}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "name: u\nactions:\n  - submit: {name: a}\n")

    message = refusal(path)

    assert message == f"{path}: line 4: key 'name' appears twice in one mapping"


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    assert refusal(path) == f"{path}: cannot read: No such file or directory"


def test_claims_are_not_checked_without_a_ledger(tmp_path: Path) -> None:
    path = write(tmp_path, scenario(SUBMIT_A, head=HEAD.replace("gres-scheduling",
                                                                 "gres-magic")))

    assert load_scenario(path).claims == ("fake.slurm-gres-magic",)


# ---- what loads ---------------------------------------------------------------


def test_the_library_is_not_empty() -> None:
    assert len(LIBRARY) >= 10


@pytest.mark.parametrize("path", LIBRARY + KEPT, ids=[p.stem for p in LIBRARY + KEPT])
def test_scenario_file_loads_with_the_ledgers_claims(path: Path) -> None:
    loaded = load_scenario(path, CLAIMS)

    assert loaded.actions
    assert set(loaded.claims) <= CLAIMS
    assert all(len(action.kinds()) == 1 for action in loaded.actions)


def test_tasks_of_an_earlier_array_and_placeholders_of_earlier_jobs_load(
    tmp_path: Path,
) -> None:
    loaded = load(tmp_path, scenario(
        "submit: {name: arr, gres: 'gpu:1', array: '0-3%2'}",
        "submit: {name: after, options: ['--dependency=afterok:{job:arr}']}",
        "wait: {job: ['arr[0]', after], state: RUNNING}",
        "expect: {job: 'arr[3]', disjoint_with: 'arr[0]', starts_before: after}",
        "cancel: 'arr[1]'",
    ))

    assert loaded.submitted_names() == ["arr", "after"]
    assert loaded.actions[2].wait is not None
    assert loaded.actions[2].wait.jobs() == ("arr[0]", "after")
    assert loaded.actions[0].submit is not None
    assert loaded.actions[0].submit.sbatch_options() == [
        "--job-name=arr", "--gres=gpu:1", "--array=0-3%2"]
    assert loaded.actions[1].submit is not None
    # Placeholders stay as written; the runner fills in job ids.
    assert loaded.actions[1].submit.sbatch_options()[-1] == (
        "--dependency=afterok:{job:arr}")


def test_fleet_preset_name_becomes_a_requirement(tmp_path: Path) -> None:
    loaded = load(tmp_path, scenario(SUBMIT_A, head=HEAD + "fleet: large\n"))

    assert loaded.requirement == FleetRequirement(preset="large")


def test_fleet_defaults_to_the_default_preset(tmp_path: Path) -> None:
    assert load(tmp_path, scenario(SUBMIT_A)).requirement.preset == "default"


def test_fleet_requirements_without_a_preset(tmp_path: Path) -> None:
    head = HEAD + "fleet: {gpus: {a100: 8}, partitions: [gpu]}\n"

    need = load(tmp_path, scenario(SUBMIT_A, head=head)).requirement

    assert (need.preset, need.gpus, need.partitions) == (None, {"a100": 8}, ("gpu",))


def test_each_key_of_an_expectation_is_one_check(tmp_path: Path) -> None:
    loaded = load(tmp_path, scenario(
        SUBMIT_A,
        "expect: {job: a, state: RUNNING, gpus: {type: a100, count: 2}, "
        "env_agrees: true}",
        "expect: {node: a100-1, state: DRAINED, flags: [DRAIN]}",
        "expect: {capacity: {gpus: 12, nodes: 3}}",
    ))

    checks = [a.expect.checks() for a in loaded.actions[1:] if a.expect]

    assert checks == [["state", "gpus", "env_agrees"], ["state", "flags"],
                      ["capacity"]]
