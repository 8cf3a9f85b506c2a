"""The scenario runner: actions against the cluster, expectations against Slurm.

The runner sees only a `Slurm` client and, where the kit created the
cluster, a `DockerCluster` for faults; without one, fault actions make the
scenario not run, with the reason. Every expectation is recorded with what
was observed, whether it passed or not.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sim.cluster import DockerCluster
from sim.errors import SimError, WaitTimeout
from sim.fleet import Fleet
from sim.observe import ACTIVE_STATES, JobHistory, Observer
from sim.scenario import (
    JOB_ID_PLACEHOLDER,
    Action,
    Expect,
    FleetRequirement,
    Scenario,
    Submit,
    Wait,
)
from sim.slurm import NodeInfo, Slurm, SubmitRejected

log = logging.getLogger(__name__)

PASSED, FAILED, NOT_RUN = "passed", "failed", "not_run"
FAULT_ACTIONS = {"stop_node", "kill_node", "start_node", "restart_controller"}
# Where each job's wrapper writes the GPU environment it was given.
ENV_DIR = ".sim/jobs"
ENV_RECORD_WAIT_S = 10
ACCOUNTING_WAIT_S = 15
START_FLAGS = {
    "STARTED_ON_SUBMIT": "submit",
    "STARTED_ON_SCHEDULE": "schedule",
    "STARTED_ON_BACKFILL": "backfill",
}
WRAPPER = """#!/bin/bash
record="$HOME/{env_dir}/$SLURM_JOB_ID.${{SLURM_RESTART_COUNT:-0}}.env"
mkdir -p "$(dirname "$record")"
{{
  echo "node=$SLURMD_NODENAME"
  echo "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES-unset}}"
  echo "SLURM_JOB_GPUS=${{SLURM_JOB_GPUS-unset}}"
}} > "$record"
# `finish` sends USR1: the job then ends early, successfully.
trap 'exit 0' USR1
{script}
sleep {duration} & wait $!
"""


@dataclass
class ExpectationResult:
    text: str
    status: str
    observed: Any
    expected: Any = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass
class JobEvidence:
    name: str
    user: str
    job_id: int | None
    label: str | None = None
    state: str | None = None
    rejected: str | None = None
    nodes: list[str] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    submit_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    starts: int = 0


@dataclass
class ScenarioResult:
    name: str
    description: str
    claims: list[str]
    status: str
    reason: str = ""
    expectations: list[ExpectationResult] = field(default_factory=list)
    jobs: list[JobEvidence] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    started_at: str = ""
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expectations"] = [
            {
                "text": e.text,
                "status": e.status,
                "observed": e.observed,
                "expected": e.expected,
            }
            for e in self.expectations
        ]
        return data


class ScenarioFailed(SimError):
    """An action could not be carried out; the scenario stops there."""


@dataclass
class _Submitted:
    spec: Submit
    job_id: int | None
    rejected: str | None = None


class Runner:
    def __init__(
        self,
        slurm: Slurm,
        cluster: DockerCluster | None,
        *,
        fleet: Fleet | None,
        poll_interval_s: float = 0.25,
        reset_timeout_s: float = 180,
        progress: Callable[[str], None] = lambda line: None,
    ):
        self.slurm = slurm
        self.cluster = cluster
        self.fleet = fleet
        self.poll_interval_s = poll_interval_s
        self.reset_timeout_s = reset_timeout_s
        self.progress = progress

    # ---- one scenario -------------------------------------------------------------

    def run(self, scenario: Scenario) -> ScenarioResult:
        result = ScenarioResult(
            scenario.name,
            scenario.description,
            list(scenario.claims),
            PASSED,
            started_at=datetime.now().astimezone().isoformat(),
        )
        reason = self.why_not_run(scenario)
        if reason:
            result.status, result.reason = NOT_RUN, reason
            self.progress(f"  not run: {reason}")
            return result
        began = time.monotonic()
        self.reset()
        self._jobs: dict[str, _Submitted] = {}
        with Observer(self.slurm, interval_s=self.poll_interval_s) as observer:
            self._observer = observer
            try:
                for i, action in enumerate(scenario.actions, 1):
                    line = f"[{i}/{len(scenario.actions)}] {describe_action(action)}"
                    self.progress(f"  {line}")
                    result.actions.append(line)
                    self._do(action, result)
            except ScenarioTimeout as exc:
                result.expectations.append(
                    ExpectationResult(f"wait for {exc.what}", FAILED, exc.seen)
                )
                result.reason = str(exc)
            except SimError as exc:
                result.expectations.append(
                    ExpectationResult(f"action: {line}", FAILED, str(exc))
                )
                result.reason = str(exc)
            observer.poll()
            result.jobs = self._evidence()
        result.duration_s = round(time.monotonic() - began, 2)
        if any(not e.passed for e in result.expectations):
            result.status = FAILED
        return result

    def why_not_run(self, scenario: Scenario) -> str:
        """Why this scenario cannot run here, or '' when it can."""
        if self.cluster is None:
            faults = sorted({a.kind for a in scenario.actions} & FAULT_ACTIONS)
            if faults:
                return (
                    f"needs {', '.join(faults)}, which only a cluster the kit "
                    "created can do"
                )
        return fleet_mismatch(scenario.requirement, self.fleet, self.slurm.nodes())

    # ---- actions ------------------------------------------------------------------

    def _do(self, action: Action, result: ScenarioResult) -> None:
        kind, value = action.kind, action.value
        if kind == "submit":
            self._submit(value)
        elif kind == "wait":
            self._wait(value)
        elif kind == "expect":
            found = self.evaluate(value)
            for expectation in found:
                mark = "ok" if expectation.passed else "FAILED"
                self.progress(
                    f"      {mark}: {expectation.text}"
                    + (
                        ""
                        if expectation.passed
                        else f" (observed: {expectation.observed})"
                    )
                )
            result.expectations += found
        elif kind == "cancel":
            self.slurm.cancel(self._job_id(value))
        elif kind == "finish":
            self.slurm.cancel(self._job_id(value), signal="USR1")
        elif kind == "drain":
            node, why = (
                (value, "drill")
                if isinstance(value, str)
                else (value.node, value.reason)
            )
            self.slurm.update_node(node, State="DRAIN", Reason=shlex.quote(why))
        elif kind == "resume":
            self.slurm.update_node(value, State="RESUME")
        elif kind == "reconfigure":
            self.slurm.reconfigure()
        else:
            self._fault(kind, value)

    def _fault(self, kind: str, node: str | None) -> None:
        assert self.cluster is not None
        if kind == "restart_controller":
            self.cluster.restart_controller()
            self._until(
                lambda: self._controller_answers(), "slurmctld to answer again", 60
            )
        elif kind == "stop_node":
            self.cluster.stop_node(node)
        elif kind == "kill_node":
            self.cluster.kill_node(node)
        elif kind == "start_node":
            self.cluster.start_node(node)

    def _controller_answers(self) -> bool:
        try:
            self.slurm.nodes()
        except SimError:
            return False
        return True

    def _submit(self, spec: Submit) -> None:
        script = WRAPPER.format(
            env_dir=ENV_DIR, script=spec.script or "", duration=spec.duration_s
        )
        options = [
            JOB_ID_PLACEHOLDER.sub(lambda m: str(self._job_id(m.group(1))), o)
            for o in spec.sbatch_options()
        ]
        try:
            job_id = self.slurm.submit(options, script, user=spec.user)
        except SubmitRejected as exc:
            self._jobs[spec.name] = _Submitted(spec, None, exc.message)
            self.progress(f"      rejected: {exc.message}")
            return
        self._jobs[spec.name] = _Submitted(spec, job_id)
        self.progress(f"      job {job_id}")

    def _job_id(self, ref: str) -> int:
        name, task = _split_ref(ref)
        submitted = self._jobs[name]
        if submitted.job_id is None:
            raise ScenarioFailed(
                f"job {name!r} was rejected at submission: {submitted.rejected}"
            )
        if task is None:
            return submitted.job_id
        history = self._task(submitted.job_id, task)
        if history is None:
            raise ScenarioFailed(f"array {name!r} has no task {task} in Slurm's queue")
        return history.job_id

    def _task(self, array_id: int, task: int) -> JobHistory | None:
        for history in self._observer.tasks_of(array_id):
            if history.latest.array_task_id == task:
                return history
        return None

    def _histories(self, ref: str) -> list[JobHistory]:
        """What was seen of a job: one history, or every task of an array."""
        name, task = _split_ref(ref)
        submitted = self._jobs[name]
        if submitted.job_id is None:
            return []
        if task is not None:
            found = self._task(submitted.job_id, task)
            return [found] if found else []
        if submitted.spec.array:
            return self._observer.tasks_of(submitted.job_id)
        found = self._observer.history(submitted.job_id)
        return [found] if found else []

    # ---- waits --------------------------------------------------------------------

    def _wait(self, wait: Wait) -> None:
        if wait.node:
            what = f"node {wait.node} in state {wait.state}"
            self._until(
                lambda: node_in_state(self._node(wait.node), wait.state),
                what,
                wait.timeout_s,
                describe=lambda: _node_state(self._node(wait.node)),
            )
            return
        refs = wait.jobs()
        target = (
            f"state {wait.state}" if wait.state else f"pending reason {wait.reason}"
        )
        what = f"job {', '.join(refs)} in {target}"

        def holds() -> bool:
            self._observer.poll()
            return all(self._job_matches(ref, wait) for ref in refs)

        self._until(
            holds,
            what,
            wait.timeout_s,
            describe=lambda: "; ".join(self._job_summary(r) for r in refs),
        )

    def _job_matches(self, ref: str, wait: Wait) -> bool:
        histories = self._histories(ref)
        if not histories:
            return False
        for history in histories:
            job = history.latest
            if wait.state and job.state != wait.state:
                return False
            if wait.reason and not (
                job.state == "PENDING" and job.reason == wait.reason
            ):
                return False
        return True

    def _job_summary(self, ref: str) -> str:
        histories = self._histories(ref)
        if not histories:
            submitted = self._jobs[_split_ref(ref)[0]]
            return f"{ref}: {'rejected' if submitted.rejected else 'not in the queue'}"
        return ", ".join(
            f"{ref} (job {h.latest.label}) {h.latest.state}"
            + (f" reason {h.latest.reason}" if h.latest.state == "PENDING" else "")
            + (f" on {','.join(h.latest.nodes)}" if h.latest.nodes else "")
            for h in histories
        )

    def _node(self, name: str) -> NodeInfo | None:
        return next((n for n in self.slurm.nodes() if n.name == name), None)

    def _until(
        self,
        condition: Callable[[], object],
        what: str,
        timeout_s: float,
        describe: Callable[[], str] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if condition():
                return
            if time.monotonic() >= deadline:
                seen = describe() if describe else ""
                raise ScenarioTimeout(what, timeout_s, seen, self._log_tail())
            time.sleep(self.poll_interval_s)

    def _log_tail(self) -> str:
        if self.cluster is None:
            return ""
        try:
            return self.cluster.log_tail("/var/log/slurm/slurmctld.log", 8)
        except SimError:
            return ""

    # ---- expectations -------------------------------------------------------------

    def evaluate(self, expect: Expect) -> list[ExpectationResult]:
        self._observer.poll()
        if expect.capacity is not None:
            return [check_capacity(expect.capacity, self.slurm.nodes())]
        if expect.node is not None:
            return check_node(expect, self._node(expect.node))
        name, _ = _split_ref(expect.job)
        submitted = self._jobs[name]
        if expect.rejected is not None or submitted.job_id is None:
            results = [check_rejected(expect, submitted.rejected)]
            if submitted.job_id is None:
                return results
        else:
            results = []
        histories = self._histories(expect.job)
        if not histories:
            return results + [
                ExpectationResult(
                    f"{expect.job} is in Slurm's queue", FAILED, "not seen by squeue"
                )
            ]
        users = {h.latest.user for h in histories}
        env = self._env_records(users)
        if expect.env_agrees:
            # A job's wrapper writes its record as it starts: allow it a moment.
            wanted = {h.job_id for h in histories if h.latest.state == "RUNNING"}
            deadline = time.monotonic() + ENV_RECORD_WAIT_S
            while not wanted <= env.keys() and time.monotonic() < deadline:
                time.sleep(self.poll_interval_s)
                env = self._env_records(users)
        features = {n.name: n.features for n in self.slurm.nodes()}
        accounting = self._accounting(histories) if expect.started_by else {}
        for history in histories:
            if expect.started_by:
                results.append(
                    check_started_by(expect, history, accounting.get(history.job_id))
                )
            results += check_job(
                expect,
                history,
                pool_of=self._fleet_pool_of,
                features=features,
                env=env.get(history.job_id),
                related=self._related(expect),
            )
        return results

    def _accounting(self, histories: list[JobHistory]) -> dict[int, dict[str, Any]]:
        """sacct's records of started jobs; slurmdbd may lag a moment behind."""
        wanted = {h.job_id for h in histories if h.start_time}
        deadline = time.monotonic() + ACCOUNTING_WAIT_S
        while True:
            records = {r["job_id"]: r for r in self.slurm.accounting(sorted(wanted))}
            started = {i for i, r in records.items() if _start_flag(r)}
            if wanted <= started or time.monotonic() >= deadline:
                return records
            time.sleep(self.poll_interval_s)

    def _related(self, expect: Expect) -> dict[str, list[JobHistory]]:
        refs = [
            r
            for r in (
                expect.disjoint_with,
                expect.starts_after_end_of,
                expect.starts_before,
            )
            if r
        ]
        return {ref: self._histories(ref) for ref in refs}

    def _fleet_pool_of(self, node: str) -> str | None:
        if self.fleet is None:
            return None
        return next((n.pool.name for n in self.fleet.nodes() if n.name == node), None)

    def _env_records(self, users: set[str]) -> dict[int, dict[str, str]]:
        """The latest environment record each job's wrapper wrote."""
        records: dict[int, tuple[int, dict[str, str]]] = {}
        for user in users:
            result = self.slurm.transport.run(
                [
                    "bash",
                    "-c",
                    f'cd "$HOME/{ENV_DIR}" 2>/dev/null && '
                    'for f in *.env; do [ -e "$f" ] && echo "== $f" && cat "$f"; '
                    "done; true",
                ],
                user=user,
            )
            for job_id, restart, values in parse_env_records(result.stdout):
                if job_id not in records or records[job_id][0] <= restart:
                    records[job_id] = (restart, values)
        return {job_id: values for job_id, (_, values) in records.items()}

    # ---- evidence and reset -------------------------------------------------------

    def _evidence(self) -> list[JobEvidence]:
        evidence = []
        for name, submitted in self._jobs.items():
            if submitted.job_id is None:
                evidence.append(
                    JobEvidence(
                        name, submitted.spec.user, None, rejected=submitted.rejected
                    )
                )
                continue
            for history in self._histories(name) or [None]:
                evidence.append(job_evidence(name, submitted, history))
        return evidence

    def reset(self) -> None:
        """An empty queue and every node of the fleet in service."""
        if self.cluster is not None:
            self.cluster.revive()
        self._until(self._controller_answers, "slurmctld to answer", 60)
        self.clean_up()
        self._until(
            lambda: not any(j.state in ACTIVE_STATES for j in self.slurm.jobs()),
            "the queue to empty",
            self.reset_timeout_s,
        )
        self._until(
            self._nodes_in_service,
            "every node to be idle",
            self.reset_timeout_s,
            describe=lambda: ", ".join(
                f"{n.name} {_node_state(n)}"
                for n in self.slurm.nodes()
                if n.state != ("IDLE",)
            ),
        )

    def clean_up(self) -> None:
        """Cancel every job still queued or running."""
        for job in self.slurm.jobs():
            if job.state in ACTIVE_STATES:
                self.slurm.cancel(job.job_id)

    def _nodes_in_service(self) -> bool:
        nodes = self.slurm.nodes()
        for node in nodes:
            if node.has("DRAIN") or (
                node.base_state == "DOWN" and not node.has("NOT_RESPONDING")
            ):
                self.slurm.update_node(node.name, State="RESUME")
        return all(n.state == ("IDLE",) for n in nodes)


class ScenarioTimeout(WaitTimeout):
    def __init__(self, what: str, timeout_s: float, seen: str, log_tail: str):
        self.what = what
        self.seen = seen
        tail = (
            f"; slurmctld log: {' | '.join(log_tail.strip().splitlines()[-4:])}"
            if log_tail.strip()
            else ""
        )
        super().__init__(f"waited {timeout_s:g}s for {what}; last seen: {seen}{tail}")


# ---- pure checks, testable on recorded observations ------------------------------


def _split_ref(ref: str) -> tuple[str, int | None]:
    match = re.fullmatch(r"(.+?)(?:\[(\d+)\])?", ref)
    assert match
    return match.group(1), int(match.group(2)) if match.group(2) else None


def _node_state(node: NodeInfo | None) -> str:
    return "+".join(node.state) if node else "unknown to Slurm"


def node_in_state(node: NodeInfo | None, state: str) -> bool:
    if node is None:
        return False
    if state in ("IDLE", "MIXED", "ALLOCATED", "DOWN", "UNKNOWN", "FUTURE"):
        return node.base_state == state
    if state in ("DRAINED", "DRAINING"):
        return node.has("DRAIN") and (
            (node.base_state == "IDLE") == (state == "DRAINED")
        )
    return node.has(state)


def describe_action(action: Action) -> str:
    value = action.value
    if action.kind == "submit":
        parts = [f"submit {value.name} as {value.user}"]
        if value.gres:
            parts.append(f"--gres={value.gres}")
        parts += list(value.options)
        if value.array:
            parts.append(f"--array={value.array}")
        return " ".join(parts)
    if action.kind == "wait":
        subject = f"job {','.join(value.jobs())}" if value.job else f"node {value.node}"
        target = value.state or f"reason {value.reason}"
        return f"wait for {subject} {target} (up to {value.timeout_s:g}s)"
    if action.kind == "expect":
        subject = value.job or value.node or "capacity"
        return f"expect {subject}: {', '.join(value.checks())}"
    if action.kind in ("restart_controller", "reconfigure"):
        return action.kind.replace("_", " ")
    target = value if isinstance(value, str) else value.node
    return f"{action.kind.replace('_', ' ')} {target}"


def parse_env_records(text: str) -> list[tuple[int, int, dict[str, str]]]:
    """`== 12.0.env` headed blocks of KEY=value lines -> (job, restart, values)."""
    records = []
    for block in text.split("== ")[1:]:
        header, _, body = block.partition("\n")
        match = re.fullmatch(r"(\d+)\.(\d+)\.env", header.strip())
        if not match:
            continue
        values = dict(line.split("=", 1) for line in body.splitlines() if "=" in line)
        records.append((int(match.group(1)), int(match.group(2)), values))
    return records


def _indices(text: str | None) -> list[int] | None:
    if text is None or text == "unset":
        return None
    return [int(i) for i in text.split(",") if i.strip().isdigit()]


def _start_flag(record: dict[str, Any]) -> str | None:
    for flag in record.get("flags", []):
        if flag in START_FLAGS:
            return START_FLAGS[flag]
    return None


def check_started_by(
    expect: Expect, history: JobHistory, record: dict[str, Any] | None
) -> ExpectationResult:
    by = {"schedule": "the main scheduler", "submit": "submission"}
    how_named = by.get(expect.started_by, expect.started_by)
    text = f"{expect.job} (job {history.latest.label}) was started by {how_named}"
    if record is None:
        return ExpectationResult(
            text, FAILED, "no accounting record", expect.started_by
        )
    how = _start_flag(record)
    return ExpectationResult(
        text,
        PASSED if how == expect.started_by else FAILED,
        f"accounting flags {record.get('flags', [])}",
        expect.started_by,
    )


def check_rejected(expect: Expect, message: str | None) -> ExpectationResult:
    if expect.rejected is None:
        return ExpectationResult(
            f"{expect.job} is accepted at submission", FAILED, f"rejected: {message}"
        )
    text = f"{expect.job} is rejected at submission with /{expect.rejected}/"
    if message is None:
        return ExpectationResult(text, FAILED, "accepted", expect.rejected)
    ok = re.search(expect.rejected, message) is not None
    return ExpectationResult(text, PASSED if ok else FAILED, message, expect.rejected)


def check_job(
    expect: Expect,
    history: JobHistory,
    *,
    pool_of: Callable[[str], str | None],
    features: dict[str, tuple[str, ...]],
    env: dict[str, str] | None,
    related: dict[str, list[JobHistory]],
) -> list[ExpectationResult]:
    job = history.latest
    who = f"{expect.job} (job {job.label})"
    results: list[ExpectationResult] = []

    def record(text: str, ok: bool, observed: Any, expected: Any = None) -> None:
        results.append(
            ExpectationResult(
                f"{who} {text}", PASSED if ok else FAILED, observed, expected
            )
        )

    if expect.state:
        record(f"is {expect.state}", job.state == expect.state, job.state, expect.state)
    if expect.reason:
        seen = f"{job.state} reason {job.reason}"
        record(
            f"pends with reason {expect.reason}",
            job.state == "PENDING" and job.reason == expect.reason,
            seen,
            expect.reason,
        )
    for reason in expect.reasons_seen:
        record(
            f"pended with reason {reason} at some point",
            reason in history.reasons,
            history.reasons,
            reason,
        )
    nodes = list(history.nodes)
    if expect.on_node:
        record(
            f"runs on {expect.on_node}",
            expect.on_node in nodes,
            nodes or "no node",
            expect.on_node,
        )
    if expect.pool:
        pools = sorted({pool_of(n) or "?" for n in nodes})
        record(
            f"runs on a node of pool {expect.pool}",
            pools == [expect.pool],
            f"pool {','.join(pools) or 'none'} (node {','.join(nodes) or 'none'})",
            expect.pool,
        )
    if expect.feature:
        record(
            f"runs on a node with feature {expect.feature}",
            bool(nodes) and all(expect.feature in features.get(n, ()) for n in nodes),
            nodes or "no node",
            expect.feature,
        )
    if expect.partition:
        record(
            f"is in partition {expect.partition}",
            job.partition == expect.partition,
            job.partition,
            expect.partition,
        )
    if expect.gpus is not None:
        results.append(_check_gpus(who, expect.gpus, history))
    if expect.indices is not None:
        held = sorted(i for a in history.gpus for i in a.indices)
        record(
            f"holds GPU indices {list(expect.indices)}",
            held == sorted(expect.indices),
            held,
            list(expect.indices),
        )
    if expect.env_agrees:
        results.append(_check_env(who, history, env))
    if expect.disjoint_with:
        results.append(
            _check_disjoint(
                who, history, expect.disjoint_with, related[expect.disjoint_with]
            )
        )
    if expect.requeued is not None:
        record(
            "was requeued" if expect.requeued else "was not requeued",
            history.requeued == expect.requeued,
            f"started {history.starts} time(s), restart count {job.restart_count}",
        )
    if expect.starts_after_end_of:
        results.append(
            _check_order(
                who,
                history,
                expect.starts_after_end_of,
                related[expect.starts_after_end_of],
                after=True,
            )
        )
    if expect.starts_before:
        results.append(
            _check_order(
                who,
                history,
                expect.starts_before,
                related[expect.starts_before],
                after=False,
            )
        )
    return results


def _check_gpus(who: str, expected: Any, history: JobHistory) -> ExpectationResult:
    count = expected if isinstance(expected, int) else expected.count
    gpu_type = None if isinstance(expected, int) else expected.type
    held = history.gpus
    total = sum(a.count for a in held)
    types = sorted({a.type or "untyped" for a in held})
    ok = total == count and (gpu_type is None or types == [gpu_type] or count == 0)
    want = f"{count} {gpu_type} GPU(s)" if gpu_type else f"{count} GPU(s)"
    seen = (
        ", ".join(
            f"{a.count} {a.type} on {a.node} (IDX {list(a.indices)})" for a in held
        )
        or "no GPUs seen while running"
    )
    return ExpectationResult(
        f"{who} holds {want}", PASSED if ok else FAILED, seen, want
    )


def _check_env(
    who: str, history: JobHistory, env: dict[str, str] | None
) -> ExpectationResult:
    text = f"{who}'s CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS name its GPU indices"
    held = sorted(i for a in history.gpus for i in a.indices)
    if env is None:
        return ExpectationResult(
            text, FAILED, "the job wrote no environment record", held
        )
    cuda = _indices(env.get("CUDA_VISIBLE_DEVICES"))
    job_gpus = _indices(env.get("SLURM_JOB_GPUS"))
    ok = (
        bool(held)
        and cuda is not None
        and sorted(cuda) == held
        and job_gpus is not None
        and sorted(job_gpus) == held
    )
    observed = (
        f"IDX {held}, CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}, "
        f"SLURM_JOB_GPUS={env.get('SLURM_JOB_GPUS')}"
    )
    return ExpectationResult(text, PASSED if ok else FAILED, observed, held)


def _check_disjoint(
    who: str, history: JobHistory, other_ref: str, others: list[JobHistory]
) -> ExpectationResult:
    text = f"{who} holds GPUs disjoint from {other_ref}'s"
    mine = {(a.node, i) for a in history.gpus for i in a.indices}
    theirs = {(a.node, i) for o in others for a in o.gpus for i in a.indices}
    shared = sorted(mine & theirs)
    ok = bool(mine) and bool(theirs) and not shared
    observed = (
        f"{sorted(mine)} vs {sorted(theirs)}" if not shared else f"both hold {shared}"
    )
    return ExpectationResult(text, PASSED if ok else FAILED, observed)


def _check_order(
    who: str,
    history: JobHistory,
    other_ref: str,
    others: list[JobHistory],
    *,
    after: bool,
) -> ExpectationResult:
    start = history.start_time
    if after:
        text = f"{who} starts only after {other_ref} ends"
        ends = [o.end_time for o in others]
        if start is None or not ends or None in ends:
            return ExpectationResult(
                text, FAILED, f"start {start}, {other_ref} end {ends or 'unseen'}"
            )
        ok = start >= max(ends)
        return ExpectationResult(
            text,
            PASSED if ok else FAILED,
            f"start {start:%H:%M:%S}, {other_ref} ended {max(ends):%H:%M:%S}",
        )
    text = f"{who} starts before {other_ref}"
    starts = [o.start_time for o in others]
    if start is None:
        return ExpectationResult(text, FAILED, "it has not started")
    if not starts or None in starts:
        return ExpectationResult(
            text, PASSED, f"started {start:%H:%M:%S}; {other_ref} has not started"
        )
    ok = start < min(starts)
    return ExpectationResult(
        text,
        PASSED if ok else FAILED,
        f"started {start:%H:%M:%S}, {other_ref} {min(starts):%H:%M:%S}",
    )


def check_node(expect: Expect, node: NodeInfo | None) -> list[ExpectationResult]:
    results = []
    state = _node_state(node)
    if expect.state:
        ok = node_in_state(node, expect.state)
        results.append(
            ExpectationResult(
                f"node {expect.node} is {expect.state}",
                PASSED if ok else FAILED,
                state,
                expect.state,
            )
        )
    for flag in expect.flags:
        ok = node is not None and node.has(flag)
        results.append(
            ExpectationResult(
                f"node {expect.node} has flag {flag}",
                PASSED if ok else FAILED,
                state,
                flag,
            )
        )
    return results


def in_service(node: NodeInfo) -> bool:
    return node.base_state in ("IDLE", "MIXED", "ALLOCATED") and not any(
        node.has(f) for f in ("DRAIN", "NOT_RESPONDING", "POWERED_DOWN")
    )


def check_capacity(
    expected: dict[str, int], nodes: list[NodeInfo]
) -> ExpectationResult:
    serving = [n for n in nodes if in_service(n)]
    seen = {"gpus": sum(sum(n.gpus.values()) for n in serving), "nodes": len(serving)}
    shown = {k: seen[k] for k in expected}
    text = "nodes in service hold " + ", ".join(f"{v} {k}" for k, v in expected.items())
    return ExpectationResult(
        text, PASSED if shown == expected else FAILED, shown, expected
    )


def fleet_mismatch(
    need: FleetRequirement, fleet: Fleet | None, nodes: list[NodeInfo]
) -> str:
    """Why the cluster's fleet does not meet `need`, or '' when it does."""
    if need.preset:
        if fleet is None:
            return (
                f"needs the kit's fleet preset {need.preset!r}; this cluster was "
                "not rendered by the kit"
            )
        if fleet.name != need.preset:
            return (
                f"needs fleet {need.preset!r}, the cluster runs {fleet.name!r} "
                f"(switch with: sim fleet use {need.preset})"
            )
    totals: dict[str, int] = {}
    widest: dict[str, int] = {}
    for node in nodes:
        for gpu_type, count in node.gpus.items():
            totals[gpu_type] = totals.get(gpu_type, 0) + count
            widest[gpu_type] = max(widest.get(gpu_type, 0), count)
    for gpu_type, count in need.gpus.items():
        if totals.get(gpu_type, 0) < count:
            have = totals.get(gpu_type, 0)
            return f"needs {count} {gpu_type} GPUs, the cluster has {have}"
    for gpu_type, count in need.gpus_per_node.items():
        if widest.get(gpu_type, 0) < count:
            return (
                f"needs a node with {count} {gpu_type} GPUs, the widest has "
                f"{widest.get(gpu_type, 0)}"
            )
    partitions = {p for n in nodes for p in n.partitions}
    for part in need.partitions:
        if part not in partitions:
            have = ", ".join(sorted(partitions))
            return f"needs partition {part!r} (the cluster has {have})"
    features = {f for n in nodes for f in n.features}
    for feature in need.features:
        if feature not in features:
            return f"needs node feature {feature!r}"
    return ""


def job_evidence(
    name: str, submitted: _Submitted, history: JobHistory | None
) -> JobEvidence:
    evidence = JobEvidence(name, submitted.spec.user, submitted.job_id)
    if history is None:
        return evidence
    job = history.latest
    evidence.job_id = job.job_id
    evidence.label = job.label
    evidence.state = job.state
    evidence.nodes = list(history.nodes)
    evidence.gpus = [
        {"node": a.node, "type": a.type, "count": a.count, "indices": list(a.indices)}
        for a in history.gpus
    ]
    evidence.reasons = list(history.reasons)
    evidence.states = list(history.states)
    evidence.starts = history.starts
    for key in ("submit_time", "start_time", "end_time"):
        value = getattr(job, key)
        setattr(evidence, key, value.isoformat() if value else None)
    return evidence
