"""Expectation checks offline, on histories built from captured Slurm 24.11 JSON.

Histories are built as the observer builds them: each sighting of a job,
one per poll, fed through `JobHistory.update` in order. Sightings Slurm was
not captured in (a job before it started, after it ended) are the captured
records changed with `dataclasses.replace`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sim.expect import (
    FAILED,
    PASSED,
    ExpectationResult,
    check_capacity,
    check_job,
    check_node,
    check_rejected,
    check_started_by,
    fleet_mismatch,
    node_in_state,
    parse_env_records,
)
from sim.fleet import load_fleet
from sim.observe import JobHistory, Observer
from sim.scenario import Expect, FleetRequirement, GpuExpectation
from sim.slurm import (
    CommandResult,
    GpuAllocation,
    Job,
    NodeInfo,
    Slurm,
    parse_jobs,
    parse_nodes,
)

DATA = Path(__file__).parent / "data" / "slurm-24.11"
FLEET = load_fleet(
    Path(__file__).resolve().parents[1] / "slurm-conf" / "fleets" / "default.yaml"
)
POOL_OF = {node.name: node.pool.name for node in FLEET.nodes()}
NOT_AVAILABLE = (
    "Batch job submission failed: Requested node configuration is not available"
)
BAD_GRES = "Invalid generic resource (gres) specification"


def captured(name: str) -> dict[str, Any]:
    with (DATA / f"{name}.json").open(encoding="utf-8") as f:
        return json.load(f)


def jobs_of(name: str) -> dict[int, Job]:
    return {job.job_id: job for job in parse_jobs(captured(name))}


def nodes_of(name: str) -> dict[str, NodeInfo]:
    return {node.name: node for node in parse_nodes(captured(name))}


BUSY = jobs_of("squeue-busy")
FILL, WAIT8 = BUSY[7], BUSY[8]  # h100:8 running on h100-1; h100:8 pending
TASK0, TASK1, TASK2 = BUSY[10], BUSY[11], BUSY[9]  # array 9 on a100-1, IDX 0, 2, 1
(REQUEUED,) = parse_jobs(captured("squeue-requeued"))  # pending after its node died
FEATURES = {name: node.features for name, node in nodes_of("node-busy").items()}


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def later(moment: datetime | None, seconds: float) -> datetime:
    assert moment is not None
    return moment + timedelta(seconds=seconds)


def queued(job: Job) -> Job:
    """How `job` looked before it started: pending, no node, no GPUs."""
    return replace(job, state="PENDING", reason="None", nodes=(), gpus=(),
                   start_time=None, end_time=None)


def seen(*sightings: Job) -> JobHistory:
    """A job's history as the observer builds it: one update per poll, in order."""
    history = JobHistory(sightings[0].job_id, sightings[0])
    for poll, job in enumerate(sightings):
        history.update(job, float(poll))
    return history


def started(job: Job) -> JobHistory:
    """A job first seen pending, then as captured."""
    return seen(queued(job), job)


def check(
    history: JobHistory,
    *,
    env: dict[str, str] | None = None,
    related: dict[str, list[JobHistory]] | None = None,
    **checks: Any,
) -> list[ExpectationResult]:
    expect = Expect(job=history.latest.name, **checks)
    return check_job(expect, history, pool_of=POOL_OF.get, features=FEATURES,
                     env=env, related=related or {})


def one(
    history: JobHistory,
    *,
    env: dict[str, str] | None = None,
    related: dict[str, list[JobHistory]] | None = None,
    **checks: Any,
) -> ExpectationResult:
    (result,) = check(history, env=env, related=related, **checks)
    return result


# ---- histories ----------------------------------------------------------------


def test_history_of_a_started_job_keeps_its_states_and_gpus() -> None:
    history = started(FILL)

    assert history.states == ["PENDING", "RUNNING"]
    assert history.starts == 1
    assert history.seen_running_at == 1.0
    assert history.gpus == FILL.gpus
    assert history.nodes == ("h100-1",)
    assert not history.requeued


def test_history_of_a_pending_job_keeps_its_reasons() -> None:
    history = seen(queued(WAIT8), WAIT8, WAIT8)

    assert history.states == ["PENDING"]
    assert history.reasons == ["Resources"]
    assert history.starts == 0
    assert history.gpus == ()


class Replay:
    """A transport that answers each command with the next captured output."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        return CommandResult(tuple(argv), 0, self.outputs.pop(0), "")


def text_of(name: str) -> str:
    return (DATA / f"{name}.json").read_text(encoding="utf-8")


def test_observer_folds_each_poll_into_histories() -> None:
    clock = iter([10.0, 20.0, 30.0])
    observer = Observer(
        Slurm(Replay(text_of("squeue-empty"), text_of("squeue-busy"), "not json")),
        clock=lambda: next(clock),
    )

    assert observer.poll() == []
    assert len(observer.poll()) == 5
    # The controller away for a poll: what was seen is kept.
    assert observer.poll() == []
    assert observer.last_error is not None and "not JSON" in observer.last_error

    assert observer.polls == 2
    fill = observer.history(7)
    assert fill is not None
    assert (fill.states, fill.gpus, fill.seen_running_at) == (
        ["RUNNING"], FILL.gpus, 20.0)
    assert [h.latest.label for h in observer.tasks_of(9)] == ["9_0", "9_1", "9_2"]


# ---- state and reason ---------------------------------------------------------


def test_state_check_passes_on_the_state_slurm_reports() -> None:
    result = one(started(FILL), state="RUNNING")

    assert (result.status, result.observed, result.expected) == (
        PASSED, "RUNNING", "RUNNING")
    assert result.text == "fill (job 7) is RUNNING"


def test_state_check_fails_with_observed_and_expected() -> None:
    result = one(started(FILL), state="COMPLETED")

    assert (result.status, result.observed, result.expected) == (
        FAILED, "RUNNING", "COMPLETED")


def test_reason_check_passes_on_a_job_pending_for_that_reason() -> None:
    state, reason = check(seen(WAIT8), state="PENDING", reason="Resources")

    assert (state.status, reason.status) == (PASSED, PASSED)
    assert reason.text == "wait8 (job 8) pends with reason Resources"


def test_reason_check_fails_on_another_reason() -> None:
    result = one(seen(REQUEUED), reason="Resources")

    assert (result.status, result.observed, result.expected) == (
        FAILED, "PENDING reason BeginTime", "Resources")


def test_reason_check_fails_on_a_running_job() -> None:
    result = one(started(FILL), reason="Resources")

    assert (result.status, result.observed) == (FAILED, "RUNNING reason None")


def test_reasons_seen_are_the_reasons_it_pended_for_at_any_poll() -> None:
    history = seen(WAIT8, replace(WAIT8, reason="Priority"))

    passed = one(history, reasons_seen=("Resources",))
    failed = one(history, reasons_seen=("Dependency",))

    assert passed.status == PASSED
    assert (failed.status, failed.observed) == (FAILED, ["Resources", "Priority"])


# ---- placement ----------------------------------------------------------------


def test_pool_check_uses_the_fleets_pool_of_the_node() -> None:
    passed = one(started(FILL), pool="h100")
    failed = one(started(TASK0), pool="h100")

    assert passed.status == PASSED
    assert (failed.status, failed.observed) == (FAILED, "pool a100 (node a100-1)")


def test_pool_check_fails_on_a_job_that_never_ran() -> None:
    result = one(seen(WAIT8), pool="h100")

    assert (result.status, result.observed) == (FAILED, "pool none (node none)")


def test_on_node_check() -> None:
    assert one(started(TASK1), on_node="a100-1").status == PASSED
    failed = one(started(TASK1), on_node="a100-2")
    assert (failed.status, failed.observed) == (FAILED, ["a100-1"])
    assert one(seen(WAIT8), on_node="h100-1").observed == "no node"


def test_feature_check_uses_the_nodes_features() -> None:
    assert one(started(FILL), feature="hopper").status == PASSED
    assert one(started(FILL), feature="ampere").status == FAILED
    assert one(seen(WAIT8), feature="hopper").status == FAILED


def test_partition_check() -> None:
    assert one(started(FILL), partition="gpu").status == PASSED
    failed = one(started(FILL), partition="cpu")
    assert (failed.status, failed.observed) == (FAILED, "gpu")


# ---- GPUs ---------------------------------------------------------------------


def test_gpus_of_a_type_and_count_pass() -> None:
    result = one(started(FILL), gpus=GpuExpectation(type="h100", count=8))

    assert result.status == PASSED
    assert result.text == "fill (job 7) holds 8 h100 GPU(s)"
    assert result.observed == "8 h100 on h100-1 (IDX [0, 1, 2, 3, 4, 5, 6, 7])"


@pytest.mark.parametrize(
    "wanted",
    [GpuExpectation(type="a100", count=8), GpuExpectation(type="h100", count=4), 4],
    ids=["wrong-type", "wrong-count", "wrong-untyped-count"],
)
def test_gpus_of_another_type_or_count_fail(wanted: GpuExpectation | int) -> None:
    assert one(started(FILL), gpus=wanted).status == FAILED


def test_untyped_count_is_any_type() -> None:
    assert one(started(FILL), gpus=8).status == PASSED
    assert one(started(TASK0), gpus=1).status == PASSED


def test_untyped_gres_passes_a_count_but_not_a_type() -> None:
    untyped = replace(TASK0, gpus=(GpuAllocation("a100-1", None, 1, (0,)),))

    typed = GpuExpectation(type="a100", count=1)

    assert one(started(untyped), gpus=1).status == PASSED
    assert one(started(untyped), gpus=typed).status == FAILED


def test_zero_gpus_on_a_job_without_gres() -> None:
    cpu_job = replace(FILL, partition="cpu", nodes=("cpu-1",), gpus=(),
                      tres_per_node="")

    passed = one(started(cpu_job), gpus=0)
    failed = one(started(FILL), gpus=0)

    assert (passed.status, passed.observed) == (PASSED, "no GPUs seen while running")
    assert failed.status == FAILED


def test_gpus_are_those_held_while_running_after_the_job_ends() -> None:
    # Slurm drops gres_detail once a job ends; the history keeps what it held.
    done = replace(FILL, state="COMPLETED", gpus=(), end_time=later(FILL.start_time, 9))

    history = seen(queued(FILL), FILL, done)

    assert one(history, gpus=GpuExpectation(type="h100", count=8)).status == PASSED


def test_indices_check() -> None:
    assert one(started(TASK2), indices=(1,)).status == PASSED
    assert one(started(FILL), indices=(7, 6, 5, 4, 3, 2, 1, 0)).status == PASSED
    failed = one(started(TASK2), indices=(0,))
    assert (failed.status, failed.observed, failed.expected) == (FAILED, [1], [0])


# ---- the job's own environment ------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "job_gpus", "status"),
    [
        ("2", "2", PASSED),
        ("0", "2", FAILED),
        ("2", "0", FAILED),
        ("2,3", "2,3", FAILED),
        ("unset", "2", FAILED),
        ("2", "unset", FAILED),
    ],
)
def test_env_agrees_when_both_variables_name_the_idx(
    cuda: str, job_gpus: str, status: str
) -> None:
    env = {"node": "a100-1", "CUDA_VISIBLE_DEVICES": cuda, "SLURM_JOB_GPUS": job_gpus}

    result = one(started(TASK1), env=env, env_agrees=True)

    assert result.status == status
    assert result.observed == (
        f"IDX [2], CUDA_VISIBLE_DEVICES={cuda}, SLURM_JOB_GPUS={job_gpus}")


def test_env_agrees_on_all_eight_gpus_in_another_order() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "7,6,5,4,3,2,1,0",
           "SLURM_JOB_GPUS": "0,1,2,3,4,5,6,7"}

    assert one(started(FILL), env=env, env_agrees=True).status == PASSED


def test_env_agrees_fails_without_a_record() -> None:
    result = one(started(TASK1), env=None, env_agrees=True)

    assert (result.status, result.observed) == (
        FAILED, "the job wrote no environment record")


def test_env_agrees_fails_on_a_job_that_held_no_gpus() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_GPUS": ""}

    assert one(seen(WAIT8), env=env, env_agrees=True).status == FAILED


ENV_LISTING = """\
== 11.0.env
node=a100-1
CUDA_VISIBLE_DEVICES=2
SLURM_JOB_GPUS=2
== 1.0.env
node=a100-2
CUDA_VISIBLE_DEVICES=0,1,2,3
SLURM_JOB_GPUS=0,1,2,3
== 1.1.env
node=a100-2
CUDA_VISIBLE_DEVICES=unset
SLURM_JOB_GPUS=unset
"""


def test_parse_env_records_reads_each_record_with_its_restart() -> None:
    records = parse_env_records(ENV_LISTING)

    assert [(job, restart) for job, restart, _ in records] == [(11, 0), (1, 0), (1, 1)]
    assert records[0][2] == {
        "node": "a100-1", "CUDA_VISIBLE_DEVICES": "2", "SLURM_JOB_GPUS": "2"}
    assert records[2][2]["CUDA_VISIBLE_DEVICES"] == "unset"


def test_parse_env_records_skips_other_headers_and_empty_output() -> None:
    listing = "cd: no such file\n== notes.txt\nx=1\n" + ENV_LISTING

    assert [r[:2] for r in parse_env_records(listing)] == [(11, 0), (1, 0), (1, 1)]
    assert parse_env_records("") == []


def test_env_record_from_the_listing_agrees_with_the_captured_idx() -> None:
    (values,) = [v for job, _, v in parse_env_records(ENV_LISTING) if job == 11]

    assert one(started(TASK1), env=values, env_agrees=True).status == PASSED


# ---- disjoint GPUs ------------------------------------------------------------


def test_disjoint_with_passes_on_other_indices_of_the_same_node() -> None:
    result = one(started(TASK1), disjoint_with="first",
                 related={"first": [started(TASK0)]})

    assert result.status == PASSED
    assert result.text == "arr (job 9_1) holds GPUs disjoint from first's"


def test_disjoint_with_every_task_of_an_array() -> None:
    tasks = {"arr": [started(TASK0), started(TASK1)]}

    assert one(started(TASK2), disjoint_with="arr", related=tasks).status == PASSED


def test_disjoint_with_fails_on_a_shared_index_of_the_same_node() -> None:
    clash = replace(TASK1, gpus=(GpuAllocation("a100-1", "a100", 1, (0,)),))

    result = one(started(clash), disjoint_with="first",
                 related={"first": [started(TASK0)]})

    assert (result.status, result.observed) == (FAILED, "both hold [('a100-1', 0)]")


def test_same_index_on_different_nodes_is_disjoint() -> None:
    # FILL holds index 0 of h100-1, TASK0 index 0 of a100-1.
    assert one(started(FILL), disjoint_with="task",
               related={"task": [started(TASK0)]}).status == PASSED


def test_disjoint_with_a_job_that_held_no_gpus_fails() -> None:
    assert one(started(FILL), disjoint_with="waiting",
               related={"waiting": [seen(WAIT8)]}).status == FAILED


# ---- requeue ------------------------------------------------------------------


def requeue_history() -> JobHistory:
    """Running on a100-2, requeued when the node died (as captured), running again."""
    held = (GpuAllocation("a100-2", "a100", 4, (0, 1, 2, 3)),)
    first = replace(REQUEUED, state="RUNNING", reason="None", restart_count=0,
                    nodes=("a100-2",), gpus=held, start_time=at(1796317873))
    again = replace(first, restart_count=1, start_time=at(1796317890))
    return seen(queued(first), first, REQUEUED, again)


def test_requeued_job_started_twice() -> None:
    history = requeue_history()

    result = one(history, requeued=True)

    assert history.states == ["PENDING", "RUNNING", "PENDING", "RUNNING"]
    assert history.reasons == ["BeginTime"]
    assert (result.status, result.observed) == (
        PASSED, "started 2 time(s), restart count 1")
    assert one(history, requeued=False).status == FAILED


def test_requeued_job_first_seen_after_the_requeue_counts_by_restart_count() -> None:
    history = seen(REQUEUED)

    assert history.starts == 0
    assert one(history, requeued=True).status == PASSED


def test_job_that_started_once_was_not_requeued() -> None:
    assert one(started(FILL), requeued=False).status == PASSED
    assert one(started(FILL), requeued=True).status == FAILED


# ---- order of starts and ends -------------------------------------------------


def holder_ended_after(seconds: float) -> dict[str, list[JobHistory]]:
    done = replace(FILL, state="COMPLETED", gpus=(),
                   end_time=later(FILL.start_time, seconds))
    return {"fill": [seen(queued(FILL), FILL, done)]}


def waiter_started_after(seconds: float) -> JobHistory:
    running = replace(WAIT8, state="RUNNING", reason="None", nodes=("h100-1",),
                      gpus=FILL.gpus, start_time=later(FILL.start_time, seconds))
    return seen(WAIT8, running)


@pytest.mark.parametrize(
    ("ended", "starts", "status"),
    [(60, 61, PASSED), (60, 60, PASSED), (60, 30, FAILED)],
    ids=["after", "same-second", "before"],
)
def test_starts_after_end_of(ended: float, starts: float, status: str) -> None:
    result = one(waiter_started_after(starts), starts_after_end_of="fill",
                 related=holder_ended_after(ended))

    assert result.status == status
    assert result.text == "wait8 (job 8) starts only after fill ends"


def test_starts_after_end_of_a_job_still_running_fails() -> None:
    result = one(waiter_started_after(61), starts_after_end_of="fill",
                 related={"fill": [started(FILL)]})

    assert result.status == FAILED
    assert "fill end [None]" in result.observed


def test_starts_after_end_of_fails_when_it_has_not_started() -> None:
    result = one(seen(WAIT8), starts_after_end_of="fill",
                 related=holder_ended_after(60))

    assert result.status == FAILED
    assert result.observed.startswith("start None")


def test_starts_before_a_job_still_pending_passes() -> None:
    result = one(started(FILL), starts_before="wide", related={"wide": [seen(WAIT8)]})

    assert result.status == PASSED
    assert result.observed.endswith("wide has not started")


@pytest.mark.parametrize(("other_starts", "status"), [(120, PASSED), (-10, FAILED),
                                                      (0, FAILED)])
def test_starts_before_a_job_that_started(other_starts: float, status: str) -> None:
    result = one(started(FILL), starts_before="wide",
                 related={"wide": [waiter_started_after(other_starts)]})

    assert result.status == status


def test_starts_before_fails_when_it_has_not_started() -> None:
    result = one(seen(WAIT8), starts_before="fill", related={"fill": [started(FILL)]})

    assert (result.status, result.observed) == (FAILED, "it has not started")


# ---- submission ---------------------------------------------------------------


def test_rejection_with_the_expected_message_passes() -> None:
    expect = Expect(job="fpga", rejected=r"Invalid generic resource \(gres\)")

    result = check_rejected(expect, BAD_GRES)

    assert (result.status, result.observed) == (PASSED, BAD_GRES)


def test_rejection_with_another_message_fails() -> None:
    expect = Expect(job="fpga", rejected=r"Invalid generic resource \(gres\)")

    result = check_rejected(expect, NOT_AVAILABLE)

    assert (result.status, result.observed) == (FAILED, NOT_AVAILABLE)


def test_job_accepted_though_rejection_was_expected_fails() -> None:
    expect = Expect(job="five-a100", rejected="Requested node configuration")

    result = check_rejected(expect, None)

    assert (result.status, result.observed) == (FAILED, "accepted")


def test_job_rejected_though_acceptance_was_expected_fails() -> None:
    expect = Expect(job="two-a100", state="RUNNING")

    result = check_rejected(expect, NOT_AVAILABLE)

    assert result.status == FAILED
    assert result.text == "two-a100 is accepted at submission"
    assert result.observed == f"rejected: {NOT_AVAILABLE}"


# ---- accounting ---------------------------------------------------------------


SACCT = captured("sacct-requeued")["jobs"][0]


def test_started_by_reads_the_accounting_start_flag() -> None:
    history = seen(REQUEUED)

    passed = check_started_by(Expect(job="victim", started_by="schedule"), history,
                              SACCT)
    failed = check_started_by(Expect(job="victim", started_by="backfill"), history,
                              SACCT)

    assert passed.status == PASSED
    assert passed.text == "victim (job 1) was started by the main scheduler"
    assert failed.status == FAILED
    assert failed.observed == (
        "accounting flags ['STARTED_ON_SCHEDULE', 'START_RECEIVED']")


def test_started_by_backfill() -> None:
    record = copy.deepcopy(SACCT)
    record["flags"] = ["STARTED_ON_BACKFILL", "START_RECEIVED"]

    result = check_started_by(Expect(job="short", started_by="backfill"),
                              started(FILL), record)

    assert result.status == PASSED


def test_started_by_fails_without_a_start_flag_or_a_record() -> None:
    record = dict(SACCT, flags=["START_RECEIVED"])
    expect = Expect(job="victim", started_by="schedule")

    assert check_started_by(expect, seen(REQUEUED), record).status == FAILED
    missing = check_started_by(expect, seen(REQUEUED), None)
    assert (missing.status, missing.observed) == (FAILED, "no accounting record")


# ---- nodes --------------------------------------------------------------------


DOWN = nodes_of("node-down")
IDLE = nodes_of("node-idle")
MIXED = nodes_of("node-busy")


def node_check(
    node: NodeInfo | None, name: str = "a100-2", **checks: Any
) -> list[ExpectationResult]:
    return check_node(Expect(node=name, **checks), node)


def test_down_node_is_down_and_not_responding() -> None:
    state, flag = node_check(DOWN["a100-2"], state="DOWN", flags=("NOT_RESPONDING",))

    assert (state.status, flag.status) == (PASSED, PASSED)
    assert state.observed == "DOWN+NOT_RESPONDING"
    assert state.text == "node a100-2 is DOWN"


def test_down_node_is_not_idle_and_an_idle_node_is_not_down() -> None:
    (idle,) = node_check(DOWN["a100-2"], state="IDLE")
    (down,) = node_check(DOWN["a100-1"], name="a100-1", state="DOWN")
    (responding,) = node_check(DOWN["a100-1"], name="a100-1", flags=("NOT_RESPONDING",))

    assert (idle.status, idle.observed, idle.expected) == (
        FAILED, "DOWN+NOT_RESPONDING", "IDLE")
    assert (down.status, down.observed) == (FAILED, "IDLE")
    assert responding.status == FAILED


def test_node_unknown_to_slurm_fails_every_check() -> None:
    state, flag = node_check(None, name="a100-9", state="IDLE", flags=("DRAIN",))

    assert (state.status, state.observed) == (FAILED, "unknown to Slurm")
    assert flag.status == FAILED


@pytest.mark.parametrize(
    ("state", "drained", "draining"),
    [
        (("IDLE", "DRAIN"), True, False),
        (("MIXED", "DRAIN"), False, True),
        (("ALLOCATED", "DRAIN"), False, True),
        # A job still completing on an idle node: Slurm says DRAINING.
        (("IDLE", "DRAIN", "COMPLETING"), False, True),
        # A drained node that died: Slurm says DRAINED*.
        (("DOWN", "DRAIN", "NOT_RESPONDING"), True, False),
        (("IDLE",), False, False),
        (("MIXED",), False, False),
    ],
)
def test_drained_and_draining_as_slurm_names_them(
    state: tuple[str, ...], drained: bool, draining: bool
) -> None:
    node = replace(IDLE["a100-2"], state=state)

    assert node_in_state(node, "DRAINED") is drained
    assert node_in_state(node, "DRAINING") is draining
    assert node_in_state(node, "DRAIN") is (drained or draining)


def test_node_check_on_a_drained_node() -> None:
    node = replace(IDLE["a100-2"], state=("IDLE", "DRAIN"), reason="drill")

    drained, flag = node_check(node, state="DRAINED", flags=("DRAIN",))
    (draining,) = node_check(node, state="DRAINING")

    assert (drained.status, flag.status) == (PASSED, PASSED)
    assert (draining.status, draining.observed) == (FAILED, "IDLE+DRAIN")


def test_mixed_node_with_a_flag_is_still_mixed() -> None:
    (result,) = node_check(MIXED["h100-1"], name="h100-1", state="MIXED")

    assert (result.status, result.observed) == (PASSED, "MIXED+PLANNED")


# ---- capacity -----------------------------------------------------------------


def test_capacity_of_the_whole_fleet() -> None:
    result = check_capacity({"gpus": 16, "nodes": 4}, list(IDLE.values()))

    assert result.status == PASSED
    assert result.text == "nodes in service hold 16 gpus, 4 nodes"


def test_busy_nodes_are_in_service() -> None:
    assert check_capacity({"gpus": 16}, list(MIXED.values())).status == PASSED


def test_down_node_is_not_counted() -> None:
    passed = check_capacity({"gpus": 12, "nodes": 3}, list(DOWN.values()))
    failed = check_capacity({"gpus": 16}, list(DOWN.values()))

    assert passed.status == PASSED
    assert (failed.status, failed.observed, failed.expected) == (
        FAILED, {"gpus": 12}, {"gpus": 16})


@pytest.mark.parametrize("flags", [("IDLE", "DRAIN"), ("MIXED", "DRAIN"),
                                   ("IDLE", "NOT_RESPONDING")])
def test_drained_or_silent_node_is_not_counted(flags: tuple[str, ...]) -> None:
    nodes = [replace(n, state=flags) if n.name == "h100-1" else n
             for n in IDLE.values()]

    result = check_capacity({"gpus": 8, "nodes": 3}, nodes)

    assert result.status == PASSED, result.observed


# ---- the fleet a scenario needs -----------------------------------------------


NODES = list(IDLE.values())


def test_fleet_that_meets_every_need_is_no_mismatch() -> None:
    need = FleetRequirement(preset="default", gpus={"a100": 8, "h100": 8},
                            gpus_per_node={"h100": 8}, partitions=("gpu", "cpu"),
                            features=("hopper", "ampere"))

    assert fleet_mismatch(need, FLEET, NODES) == ""


def test_other_preset_names_the_switch_command() -> None:
    message = fleet_mismatch(FleetRequirement(preset="large"), FLEET, NODES)

    assert message == (
        "needs fleet 'large', the cluster runs 'default' (switch with: sim fleet use "
        "large)")


def test_preset_without_a_fleet_of_the_kit() -> None:
    message = fleet_mismatch(FleetRequirement(preset="default"), None, NODES)

    assert "needs the kit's fleet preset 'default'" in message
    assert "not rendered by the kit" in message


def test_requirements_without_a_preset_hold_on_any_cluster() -> None:
    assert fleet_mismatch(FleetRequirement(gpus={"a100": 8}), None, NODES) == ""


@pytest.mark.parametrize(
    ("need", "message"),
    [
        (FleetRequirement(gpus={"a100": 9}), "needs 9 a100 GPUs, the cluster has 8"),
        (FleetRequirement(gpus={"b200": 1}), "needs 1 b200 GPUs, the cluster has 0"),
        (FleetRequirement(gpus_per_node={"a100": 8}),
         "needs a node with 8 a100 GPUs, the widest has 4"),
        (FleetRequirement(partitions=("debug",)),
         "needs partition 'debug' (the cluster has cpu, gpu)"),
        (FleetRequirement(features=("nvlink",)), "needs node feature 'nvlink'"),
    ],
    ids=["gpu-total", "gpu-type-absent", "gpus-per-node", "partition", "feature"],
)
def test_unmet_need_is_named(need: FleetRequirement, message: str) -> None:
    assert fleet_mismatch(need, FLEET, NODES) == message
