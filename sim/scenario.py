"""Scenario files: jobs to submit, faults to inject, outcomes to expect.

A scenario is a list of actions run in order. `submit`, `cancel`, `finish`
and the node and controller faults change the cluster; `wait` polls until a
condition holds or its deadline passes; `expect` checks what Slurm reports
and records each check with what was observed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.errors import SpecError
from sim.specfile import read_yaml, validate

NAME = r"^[a-z][a-z0-9_-]*$"
# A job reference: a submitted job's name, or one task of an array: name[3].
JOB_REF = r"^[a-z][a-z0-9_-]*(\[\d+\])?$"
JobRef = str
# In sbatch options, {job:NAME} stands for the Slurm job id of job NAME.
JOB_ID_PLACEHOLDER = re.compile(r"\{job:([a-z][a-z0-9_-]*)\}")
JOB_STATES = (
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "COMPLETING",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "REQUEUED",
    "SUSPENDED",
    "OUT_OF_MEMORY",
)
NODE_STATES = (
    "IDLE",
    "MIXED",
    "ALLOCATED",
    "DOWN",
    "DRAIN",
    "DRAINING",
    "DRAINED",
    "NOT_RESPONDING",
    "COMPLETING",
    "UNKNOWN",
    "FUTURE",
    "POWERED_DOWN",
)
DEFAULT_WAIT_S = 60


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _job_ref(value: str) -> str:
    if not re.match(JOB_REF, value):
        raise ValueError(
            f"job reference {value!r} must be a job name, "
            "or name[N] for one task of an array"
        )
    return value


class Submit(_Spec):
    name: str = Field(pattern=NAME, max_length=40)
    user: str = Field(default="alice", pattern=r"^[a-z_][a-z0-9_-]*$")
    gres: str | None = Field(default=None, pattern=r"^[a-z_]+(:[A-Za-z0-9_.]+)*$")
    options: tuple[str, ...] = ()
    array: str | None = Field(default=None, pattern=r"^[0-9,%:-]+$")
    duration_s: int = Field(default=300, ge=0, le=86400)
    script: str | None = None
    # Run the boundary-control probe (sim.boundary.PROBE) as the job starts.
    probe: bool = False

    def sbatch_options(self) -> list[str]:
        options = [f"--job-name={self.name}"]
        if self.gres:
            options.append(f"--gres={self.gres}")
        if self.array:
            options.append(f"--array={self.array}")
        return options + list(self.options)


class Wait(_Spec):
    job: JobRef | tuple[JobRef, ...] | None = None
    node: str | None = None
    state: str | None = None
    reason: str | None = None
    # Until the job's priority is above that job's (fairshare and QOS factors
    # are recalculated every PriorityCalcPeriod).
    priority_above: JobRef | None = None
    timeout_s: float = Field(default=DEFAULT_WAIT_S, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_subject(self) -> Wait:
        if (self.job is None) == (self.node is None):
            raise ValueError("give exactly one of job and node")
        if self.state is None and self.reason is None and self.priority_above is None:
            raise ValueError("give state, reason or priority_above to wait for")
        if self.node is not None and (self.reason or self.priority_above):
            raise ValueError("reason and priority_above apply to jobs, not nodes")
        above = (self.priority_above,) if self.priority_above else ()
        for ref in self.jobs() + above:
            _job_ref(ref)
        _check_state(self.state, NODE_STATES if self.node else JOB_STATES)
        return self

    def jobs(self) -> tuple[str, ...]:
        if self.job is None:
            return ()
        return (self.job,) if isinstance(self.job, str) else self.job


class GpuExpectation(_Spec):
    type: str | None = None
    count: int = Field(ge=0)


class Expect(_Spec):
    """Checks on one job, one node, or the cluster's capacity; each key is one check."""

    job: JobRef | None = None
    node: str | None = None
    capacity: dict[str, int] | None = None
    # Job checks.
    state: str | None = None
    reason: str | None = None
    reasons_seen: tuple[str, ...] = ()
    rejected: str | None = None
    on_node: str | None = None
    pool: str | None = None
    feature: str | None = None
    partition: str | None = None
    gpus: GpuExpectation | int | None = None
    indices: tuple[int, ...] | None = None
    # gres/shard: how many shards it holds, and the GPU indices they come from.
    shards: int | None = Field(default=None, ge=0)
    shard_indices: tuple[int, ...] | None = None
    account: str | None = None
    qos: str | None = None
    priority_above: JobRef | None = None
    # Allocated TRES in its accounting record (sacct): gres/gpu, gres/gpu:a100...
    tres: dict[str, int] | None = None
    cpus: int | None = Field(default=None, ge=0)
    memory_mb: int | None = Field(default=None, ge=0)
    cpu_sockets: tuple[int, ...] | None = None
    # Whether every GPU it holds is near a core it holds (gres.conf Cores=).
    near_its_gpus: bool | None = None
    # Values the job's environment record holds (its wrapper writes node,
    # CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS; a script may add lines to
    # "$record").
    env: dict[str, str] | None = None
    env_agrees: Literal[True] | None = None
    disjoint_with: JobRef | None = None
    requeued: bool | None = None
    starts_after_end_of: JobRef | None = None
    starts_before: JobRef | None = None
    # How slurmctld started it, from accounting: at submission, by the main
    # scheduler's pass, or by backfill.
    started_by: Literal["submit", "schedule", "backfill"] | None = None
    # Node checks (with `node`): state above, and:
    flags: tuple[str, ...] = ()
    # Shards held on each GPU index of the node.
    shards_used: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Expect:
        subjects = [
            k for k in ("job", "node", "capacity") if getattr(self, k) is not None
        ]
        if len(subjects) != 1:
            raise ValueError("give exactly one of job, node and capacity")
        if self.job is not None:
            _job_ref(self.job)
            _check_state(self.state, JOB_STATES)
            for key in ("flags", "shards_used"):
                if getattr(self, key):
                    raise ValueError(f"{key} applies to nodes")
            if self.tres is not None and not self.tres:
                raise ValueError("tres needs at least one TRES to check")
        if self.node is not None:
            _check_state(self.state, NODE_STATES)
            job_only = [k for k in self.job_checks() if k != "state"]
            if job_only:
                raise ValueError(f"{job_only[0]} applies to jobs, not nodes")
        if self.capacity is not None:
            unknown = set(self.capacity) - {"gpus", "nodes"}
            if unknown:
                raise ValueError(
                    f"capacity takes gpus and nodes, not {sorted(unknown)}"
                )
            if not self.capacity:
                raise ValueError("capacity needs gpus or nodes to check")
            # The runner checks only capacity here: refuse what it would skip.
            others = [k for k in self.checks() if k != "capacity"]
            if others:
                raise ValueError(f"{others[0]} applies to jobs and nodes, not capacity")
        if not self.checks():
            raise ValueError(
                "nothing to check: add state, reason, gpus or another check"
            )
        return self

    def job_checks(self) -> list[str]:
        skip = {"job", "node", "capacity", "flags", "shards_used"}
        return [
            k
            for k in type(self).model_fields
            if k not in skip and getattr(self, k) not in (None, ())
        ]

    def checks(self) -> list[str]:
        found = self.job_checks()
        if self.flags:
            found.append("flags")
        if self.shards_used is not None:
            found.append("shards_used")
        if self.capacity is not None:
            found.append("capacity")
        return found


def _check_state(state: str | None, allowed: tuple[str, ...]) -> None:
    if state is not None and state not in allowed:
        raise ValueError(f"state {state!r} is not one of {', '.join(allowed)}")


class NodeRef(_Spec):
    node: str
    reason: str = "drill"


ACTIONS = (
    "submit",
    "wait",
    "expect",
    "cancel",
    "finish",
    "drain",
    "resume",
    "stop_node",
    "kill_node",
    "start_node",
    "restart_controller",
    "stop_service",
    "start_service",
    "reconfigure",
    "reset_usage",
    "probe",
)
# Accounting services a scenario may stop and start mid-run.
SERVICES = ("slurmdbd", "mariadb")


class Action(_Spec):
    """One thing a scenario does: exactly one of the keys is given."""

    submit: Submit | None = None
    wait: Wait | None = None
    expect: Expect | None = None
    cancel: JobRef | None = None
    finish: JobRef | None = None
    drain: NodeRef | str | None = None
    resume: str | None = None
    stop_node: str | None = None
    kill_node: str | None = None
    start_node: str | None = None
    restart_controller: Literal[True] | None = None
    stop_service: Literal[SERVICES] | None = None
    start_service: Literal[SERVICES] | None = None
    reconfigure: Literal[True] | None = None
    # Forget these accounts' fairshare usage (RawUsage=0), for a clean start.
    reset_usage: tuple[Annotated[str, Field(pattern=NAME)], ...] | None = None
    # Record what a job's boundary-control probe observed.
    probe: JobRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        given = self.kinds()
        if len(given) != 1:
            got = ", ".join(given) or "none"
            raise ValueError(
                f"give exactly one action of {', '.join(ACTIONS)} (got {got})"
            )
        for key in ("cancel", "finish", "probe"):
            if getattr(self, key) is not None:
                _job_ref(getattr(self, key))
        return self

    def kinds(self) -> list[str]:
        return [k for k in ACTIONS if getattr(self, k) is not None]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def value(self) -> Any:
        return getattr(self, self.kind)


class FleetRequirement(_Spec):
    """What a scenario needs of the fleet it runs on."""

    preset: str | None = None
    gpus: dict[str, int] = {}
    gpus_per_node: dict[str, int] = {}
    partitions: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    # Tasks bound to the CPUs of the sockets Slurm modelled: only nodes whose
    # machines have those sockets can do it (not the kit's containers).
    task_binding: bool = False
    # A node whose GPUs of this type have exactly this many shards each.
    shards_per_gpu: dict[str, int] = {}
    # Some node with shards, of any GPU.
    shards: bool = False
    # QOS and accounts the accounting policy must have (sacctmgr's view).
    qos: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()


class Scenario(_Spec):
    name: str = Field(pattern=NAME, max_length=60)
    description: str = Field(min_length=1)
    claims: tuple[str, ...] = Field(min_length=1)
    # Validated even when omitted, so that it always becomes a FleetRequirement.
    fleet: FleetRequirement | str = Field(default="default", validate_default=True)
    actions: tuple[Action, ...] = Field(min_length=1)

    @field_validator("fleet")
    @classmethod
    def _fleet_preset(cls, value: FleetRequirement | str) -> FleetRequirement:
        return FleetRequirement(preset=value) if isinstance(value, str) else value

    @property
    def requirement(self) -> FleetRequirement:
        assert isinstance(self.fleet, FleetRequirement)
        return self.fleet

    def submitted_names(self) -> list[str]:
        return [a.submit.name for a in self.actions if a.submit]


def load_scenario(path: Path, claim_ids: set[str] | None = None) -> Scenario:
    """Read and validate a scenario; `claim_ids`, when given, are the allowed claims."""
    scenario = validate(Scenario, read_yaml(path), path)
    problem = _cross_check(scenario, claim_ids)
    if problem:
        raise SpecError(f"{path}: {problem}")
    return scenario


def _cross_check(scenario: Scenario, claim_ids: set[str] | None) -> str | None:
    if claim_ids is not None:
        for i, claim in enumerate(scenario.claims):
            if claim not in claim_ids:
                return (
                    f"claims[{i}]: unknown claim {claim!r} "
                    f"(claims: {', '.join(sorted(claim_ids))})"
                )
    names: list[str] = []
    for i, action in enumerate(scenario.actions):
        if action.submit:
            for option in action.submit.options:
                for ref in JOB_ID_PLACEHOLDER.findall(option):
                    if ref not in names:
                        return (
                            f"actions[{i}].submit.options: {{job:{ref}}} names no "
                            f"job submitted before this one"
                        )
            if action.submit.name in names:
                return (
                    f"actions[{i}].submit.name: job name "
                    f"{action.submit.name!r} is used twice"
                )
            names.append(action.submit.name)
            continue
        for field, ref in _references(action):
            base = ref.split("[")[0]
            if base not in names:
                known = ", ".join(names) or "none yet"
                return (
                    f"actions[{i}].{field}: no job named {base!r} was submitted "
                    f"before this action (submitted: {known})"
                )
    return None


def _references(action: Action) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    if action.cancel:
        refs.append(("cancel", action.cancel))
    if action.finish:
        refs.append(("finish", action.finish))
    if action.probe:
        refs.append(("probe", action.probe))
    if action.wait:
        refs += [("wait.job", ref) for ref in action.wait.jobs()]
        if action.wait.priority_above:
            refs.append(("wait.priority_above", action.wait.priority_above))
    if action.expect:
        for key in ("job", "disjoint_with", "starts_after_end_of", "starts_before",
                    "priority_above"):
            ref = getattr(action.expect, key)
            if ref:
                refs.append((f"expect.{key}", ref))
    return refs
