"""The scenario runner: actions against the cluster, expectations against Slurm.

The runner sees only a `Slurm` client and, where the kit created the
cluster, a `DockerCluster` for faults; without one, fault actions make the
scenario not run, with the reason. Every expectation is recorded with what
was observed, whether it passed or not.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sim.boundary import PROBE, interpret
from sim.cluster import DockerCluster
from sim.errors import SimError, WaitTimeout
from sim.expect import (
    FAILED,
    NOT_RUN,
    PASSED,
    ExpectationResult,
    check_capacity,
    check_job,
    check_node,
    check_rejected,
    check_started_by,
    check_tres,
    fleet_mismatch,
    load_preset,
    node_in_state,
    node_state,
    parse_env_records,
    preset_mismatch,
    record_ended,
    start_flag,
)
from sim.fleet import Fleet
from sim.observe import ACTIVE_STATES, JobHistory, Observer
from sim.scenario import (
    JOB_ID_PLACEHOLDER,
    Action,
    Expect,
    Scenario,
    Submit,
    Wait,
)
from sim.slurm import NodeInfo, Slurm, SubmitRejected

log = logging.getLogger(__name__)
T = TypeVar("T")

FAULT_ACTIONS = {"stop_node", "kill_node", "start_node", "restart_controller",
                 "stop_service", "start_service"}
# Where each job's wrapper writes the GPU environment it was given.
ENV_DIR = ".sim/jobs"
ENV_RECORD_WAIT_S = 10
ACCOUNTING_WAIT_S = 30
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
{probe}
{script}
sleep {duration} & wait $!
"""


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
    # What boundary controls observed (see sim.boundary).
    observations: list[dict[str, Any]] = field(default_factory=list)
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
        self._scenario_fleet = None
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
        with Observer(self.slurm, interval_s=self.poll_interval_s,
                      watched=set()) as observer:
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
        nodes = self.slurm.nodes()
        need = scenario.requirement
        if self.fleet is None and need.preset:
            # On a cluster the kit did not render, a preset is a shape the
            # cluster must have: its nodes, GPUs and partitions.
            preset = load_preset(need.preset)
            mismatch = preset_mismatch(preset, nodes)
            if mismatch:
                return mismatch
            self._scenario_fleet = preset
            need = need.model_copy(update={"preset": None})
        policy = None
        if need.qos or need.accounts:
            policy = {"qos": set(self.slurm.qos_names()),
                      "accounts": set(self.slurm.account_names())}
        return fleet_mismatch(need, self.fleet, nodes, policy)

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
        elif kind == "reset_usage":
            for account in value:
                self.slurm.reset_usage(account)
        elif kind == "probe":
            self._record_probe(value, result)
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
        elif kind == "stop_service":
            self.cluster.stop_service(node)
        elif kind == "start_service":
            self.cluster.start_service(node)
            # Either way, accounting is back once sacct answers from the database.
            self._until(self._accounting_answers, f"accounting to answer after "
                        f"{node} started", 120)

    def _record_probe(self, ref: str, result: ScenarioResult) -> None:
        job_id = self._job_id(ref)
        user = self._jobs[_split_ref(ref)[0]].spec.user
        path = f"$HOME/{ENV_DIR}/{job_id}.0.probe.json"
        found = self._fetch_until(
            lambda: self.slurm.transport.run(
                ["bash", "-c", f'cat "{path}"'], user=user
            ),
            lambda found: found.exit_code == 0 and bool(found.stdout.strip()),
            ENV_RECORD_WAIT_S,
        )
        if found.exit_code != 0 or not found.stdout.strip():
            raise ScenarioFailed(f"job {ref} wrote no probe record ({path})")
        for finding in interpret(json.loads(found.stdout)):
            finding["job"] = ref
            result.observations.append(finding)
            self.progress(f"      observed: {finding['finding']}")

    def _accounting_answers(self) -> bool:
        return _answers(lambda: self.slurm.accounting([1]))

    def _controller_answers(self) -> bool:
        return _answers(self.slurm.nodes)

    def _submit(self, spec: Submit) -> None:
        probe = ""
        if spec.probe:
            probe = (
                f"python3 - > \"${{record%.env}}.probe.json\" <<'PROBE'\n"
                f"{PROBE.strip()}\nPROBE"
            )
        script = WRAPPER.format(
            env_dir=ENV_DIR,
            script=spec.script or "",
            duration=spec.duration_s,
            probe=probe,
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
        self._observer.watch(job_id)
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
                describe=lambda: node_state(self._node(wait.node)),
            )
            return
        refs = wait.jobs()
        target = " and ".join(
            part for part in (
                wait.state and f"state {wait.state}",
                wait.reason and f"pending reason {wait.reason}",
                wait.priority_above and f"priority above {wait.priority_above}'s",
            ) if part
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
            if wait.priority_above and not any(
                job.priority > other.latest.priority
                for other in self._histories(wait.priority_above)
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
            + f" priority {h.latest.priority}"
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
        # A job's wrapper writes its record as it starts: allow it a moment.
        wanted = {h.job_id for h in histories if h.latest.state == "RUNNING"}
        env = self._fetch_until(
            lambda: self._env_records(users),
            lambda env: not expect.env_agrees or wanted <= env.keys(),
            ENV_RECORD_WAIT_S,
        )
        features = {n.name: n.features for n in self.slurm.nodes()}
        accounting = (self._accounting(histories, ended=expect.tres is not None)
                      if expect.started_by or expect.tres else {})
        for history in histories:
            if expect.started_by:
                results.append(
                    check_started_by(expect, history, accounting.get(history.job_id))
                )
            if expect.tres:
                results.append(
                    check_tres(expect, history, accounting.get(history.job_id))
                )
            results += check_job(
                expect,
                history,
                pool_of=self._fleet_pool_of,
                features=features,
                env=env.get(history.job_id),
                related=self._related(expect),
                fleet=self._known_fleet,
            )
        return results

    def _accounting(self, histories: list[JobHistory], *, ended: bool = False
                    ) -> dict[int, dict[str, Any]]:
        """sacct's records of started jobs; slurmdbd may lag a moment behind.
        With `ended`, wait until the records of ended jobs show their end."""
        wanted = {h.job_id for h in histories if h.start_time}
        done = {h.job_id for h in histories if h.end_time} if ended else set()
        submitted = {h.job_id: h.latest.submit_time for h in histories}

        def fetch() -> dict[int, dict[str, Any]]:
            records = latest_records(self.slurm.accounting(sorted(wanted)))
            # An older job of the same id is not this one: wait for this one's.
            return {i: r for i, r in records.items()
                    if not _older(r, submitted.get(i))}

        def complete(records: dict[int, dict[str, Any]]) -> bool:
            return wanted <= {i for i, r in records.items() if start_flag(r)} and all(
                i in records and record_ended(records[i]) for i in done)

        return self._fetch_until(
            fetch,
            complete,
            ACCOUNTING_WAIT_S,
        )

    def _fetch_until(
        self, fetch: Callable[[], T], done: Callable[[T], bool], timeout_s: float
    ) -> T:
        """Fetch until `done` holds or the time is up; the last fetch either way."""
        deadline = time.monotonic() + timeout_s
        value = fetch()
        while not done(value) and time.monotonic() < deadline:
            time.sleep(self.poll_interval_s)
            value = fetch()
        return value

    def _related(self, expect: Expect) -> dict[str, list[JobHistory]]:
        refs = [
            r
            for r in (
                expect.disjoint_with,
                expect.starts_after_end_of,
                expect.starts_before,
                expect.priority_above,
            )
            if r
        ]
        return {ref: self._histories(ref) for ref in refs}

    @property
    def _known_fleet(self) -> Fleet | None:
        """The cluster's fleet, or the preset a real cluster was found to match."""
        return self.fleet or getattr(self, "_scenario_fleet", None)

    def _fleet_pool_of(self, node: str) -> str | None:
        fleet = self._known_fleet
        if fleet is None:
            return None
        return next((n.pool.name for n in fleet.nodes() if n.name == node), None)

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
            lambda: (
                not any(j.state in ACTIVE_STATES for j in self.slurm.jobs(ended=False))
            ),
            "the queue to empty",
            self.reset_timeout_s,
        )
        self._until(
            self._nodes_in_service,
            "every node to be idle",
            self.reset_timeout_s,
            describe=lambda: ", ".join(
                f"{n.name} {node_state(n)}"
                for n in self.slurm.nodes()
                if n.state != ("IDLE",)
            ),
        )

    def clean_up(self) -> None:
        """Cancel every job still queued or running."""
        for job in self.slurm.jobs(ended=False):
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


def _answers(ask: Callable[[], object]) -> bool:
    """Whether a Slurm command gets an answer (its daemon may be down)."""
    try:
        ask()
    except SimError:
        return False
    return True


def latest_records(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Accounting records by job id. A fleet switch starts slurmctld's job ids
    again from 1 while accounting keeps the old jobs: the newest submission
    of an id is the scenario's job."""
    ordered = sorted(records, key=lambda r: (r.get("time") or {}).get("submission", 0))
    return {r["job_id"]: r for r in ordered}


def _older(record: dict[str, Any], submitted: datetime | None) -> bool:
    when = (record.get("time") or {}).get("submission")
    return bool(submitted and when and when < submitted.timestamp() - 1)


def _split_ref(ref: str) -> tuple[str, int | None]:
    match = re.fullmatch(r"(.+?)(?:\[(\d+)\])?", ref)
    assert match
    return match.group(1), int(match.group(2)) if match.group(2) else None


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
        target = value.state or (f"reason {value.reason}" if value.reason
                                 else f"priority above {value.priority_above}")
        return f"wait for {subject} {target} (up to {value.timeout_s:g}s)"
    if action.kind == "expect":
        subject = value.job or value.node or "capacity"
        return f"expect {subject}: {', '.join(value.checks())}"
    if action.kind in ("restart_controller", "reconfigure"):
        return action.kind.replace("_", " ")
    if action.kind == "reset_usage":
        return f"reset fairshare usage of {', '.join(value)}"
    target = value if isinstance(value, str) else value.node
    return f"{action.kind.replace('_', ' ')} {target}"


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
