"""Expectations: pure checks of what Slurm reported against what a scenario expects.

Each check takes recorded observations (job histories, node records,
accounting records, the environment a job's wrapper wrote) and returns an
`ExpectationResult` that says what was expected and what was observed, so
every check can be tested offline on captured Slurm output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim.fleet import Fleet, core_numbers
from sim.observe import JobHistory
from sim.scenario import Expect, FleetRequirement
from sim.slurm import NodeInfo

PASSED, FAILED, NOT_RUN = "passed", "failed", "not_run"

START_FLAGS = {
    "STARTED_ON_SUBMIT": "submit",
    "STARTED_ON_SCHEDULE": "schedule",
    "STARTED_ON_BACKFILL": "backfill",
}


@dataclass
class ExpectationResult:
    text: str
    status: str
    observed: Any
    expected: Any = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def node_state(node: NodeInfo | None) -> str:
    return "+".join(node.state) if node else "unknown to Slurm"


def node_in_state(node: NodeInfo | None, state: str) -> bool:
    if node is None:
        return False
    if state in ("IDLE", "MIXED", "ALLOCATED"):
        # In service: a drained or unresponsive node is not what a user means.
        return node.base_state == state and not (
            node.has("DRAIN") or node.has("NOT_RESPONDING"))
    if state in ("DOWN", "UNKNOWN", "FUTURE"):
        return node.base_state == state
    if state in ("DRAINED", "DRAINING"):
        # Slurm's own rule: draining while a job holds the node or is still
        # completing on it, drained otherwise (a down node included).
        busy = node.base_state in ("ALLOCATED", "MIXED") or node.has("COMPLETING")
        return node.has("DRAIN") and busy == (state == "DRAINING")
    return node.has(state)


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


def start_flag(record: dict[str, Any]) -> str | None:
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
    how = start_flag(record)
    return ExpectationResult(
        text,
        PASSED if how == expect.started_by else FAILED,
        f"accounting flags {record.get('flags', [])}",
        expect.started_by,
    )


def record_states(record: dict[str, Any]) -> list[str]:
    """An accounting record's current job state(s): ["COMPLETED"], ..."""
    return (record.get("state") or {}).get("current") or []


def record_ended(record: dict[str, Any]) -> bool:
    """Whether an accounting record shows its job over (it has an end time)."""
    current = record_states(record)
    return bool(current) and not set(current) & {"PENDING", "RUNNING", "REQUEUED"}


def accounted_tres(record: dict[str, Any]) -> dict[str, int]:
    """sacct's allocated TRES as {"gres/gpu:a100": 2, "cpu": 1, ...}."""
    found = {}
    for tres in (record.get("tres") or {}).get("allocated") or []:
        name = tres.get("type", "") + (f"/{tres['name']}" if tres.get("name") else "")
        found[name] = tres.get("count", 0)
    return found


def check_tres(expect: Expect, history: JobHistory, record: dict[str, Any] | None
               ) -> ExpectationResult:
    assert expect.tres is not None
    want = ", ".join(f"{k}={v}" for k, v in expect.tres.items())
    text = f"{expect.job} (job {history.latest.label}) is accounted with {want}"
    if record is None:
        return ExpectationResult(text, FAILED, "no accounting record", want)
    held = accounted_tres(record)
    seen = {k: held.get(k, 0) for k in expect.tres}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(held.items())) or "no TRES"
    state = "+".join(record_states(record))
    return ExpectationResult(text, PASSED if seen == expect.tres else FAILED,
                             f"{shown} ({state})", want)


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
    fleet: Fleet | None = None,
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
    if expect.shards is not None:
        held = sum(a.count for a in history.shards)
        shown = ", ".join(f"{a.count} on {a.node} (per GPU {list(a.per_gpu)})"
                          for a in history.shards) or "no shards seen while running"
        record(f"holds {expect.shards} shard(s)", held == expect.shards, shown,
               expect.shards)
    if expect.shard_indices is not None:
        held = sorted(i for a in history.shards for i in a.indices)
        record(f"holds shards of GPU indices {list(expect.shard_indices)}",
               held == sorted(expect.shard_indices), held, list(expect.shard_indices))
    if expect.account:
        record(f"is charged to account {expect.account}",
               job.account == expect.account, job.account, expect.account)
    if expect.qos:
        record(f"runs under QOS {expect.qos}", job.qos == expect.qos, job.qos,
               expect.qos)
    if expect.priority_above:
        others = related[expect.priority_above]
        theirs = [o.latest.priority for o in others]
        record(f"has a higher priority than {expect.priority_above}",
               bool(theirs) and all(job.priority > p for p in theirs),
               f"{job.priority} vs {theirs or 'unseen'}")
    if expect.cpus is not None:
        record(f"holds {expect.cpus} CPU(s)", job.cpus == expect.cpus, job.cpus,
               expect.cpus)
    if expect.memory_mb is not None:
        record(f"holds {expect.memory_mb} MB of memory",
               job.memory_mb == expect.memory_mb, f"{job.memory_mb} MB",
               expect.memory_mb)
    if expect.cpu_sockets is not None:
        sockets = sorted({socket for _, socket, _ in history.cores})
        record(f"holds cores on socket(s) {list(expect.cpu_sockets)}",
               sockets == sorted(expect.cpu_sockets),
               f"sockets {sockets} (cores {[c for _, _, c in history.cores]})",
               list(expect.cpu_sockets))
    if expect.near_its_gpus is not None:
        results.append(_check_near(who, history, expect.near_its_gpus, fleet))
    if expect.env_agrees:
        results.append(_check_env(who, history, env))
    for key, value in (expect.env or {}).items():
        seen = (env or {}).get(key)
        record(f"has {key}={value} in its environment", seen == value,
               f"{key}={seen}" if seen is not None else f"no {key} recorded", value)
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
            "requeued" if expect.requeued else "not requeued",
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


def _check_near(who: str, history: JobHistory, want: bool, fleet: Fleet | None
                ) -> ExpectationResult:
    text = (f"{who} holds cores near every GPU it holds" if want
            else f"{who} holds a GPU far from all its cores")
    pools = {n.name: n.pool for n in fleet.nodes()} if fleet else {}
    far = []
    for gpu in history.gpus:
        pool = pools.get(gpu.node)
        if pool is None:
            return ExpectationResult(text, FAILED, f"the fleet has no node {gpu.node}")
        held = {socket * pool.cores_per_socket + core
                for node, socket, core in history.cores if node == gpu.node}
        for index in gpu.indices:
            if not held & set(core_numbers(pool.gpu_cores(index))):
                far.append(f"GPU {index} on {gpu.node}")
    cores = [f"{n}:{s}.{c}" for n, s, c in history.cores]
    observed = (f"far: {', '.join(far)}" if far else "every GPU near a held core") \
        + f" (cores socket.core {cores})"
    ok = bool(history.gpus) and (not far) == want
    return ExpectationResult(text, PASSED if ok else FAILED, observed,
                             "near" if want else "far")


def _check_env(
    who: str, history: JobHistory, env: dict[str, str] | None
) -> ExpectationResult:
    text = f"{who}'s CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS name its GPU indices"
    # The record comes from the batch script, on the job's first node.
    batch_node = (env or {}).get("node")
    held = sorted(i for a in history.gpus if batch_node in (None, a.node)
                  for i in a.indices)
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
    return ExpectationResult(text, PASSED if ok else FAILED, observed,
                             "no GPU index of a node held by both")


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
    if not others:
        return ExpectationResult(text, FAILED, f"{other_ref} was never in the queue")
    if None in starts:
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
    state = node_state(node)
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
    if expect.shards_used is not None:
        used = list(node.shards_used) if node else None
        results.append(ExpectationResult(
            f"node {expect.node} has shards {list(expect.shards_used)} held per GPU",
            PASSED if used == list(expect.shards_used) else FAILED,
            used if used is not None else "unknown to Slurm",
            list(expect.shards_used),
        ))
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


def load_preset(name: str) -> Fleet:
    from sim.fleet import load_fleet
    from sim.paths import FLEETS

    return load_fleet(FLEETS / f"{name}.yaml")


def preset_mismatch(preset: Fleet, nodes: list[NodeInfo]) -> str:
    """Why a cluster is not shaped like `preset` (nodes, GPUs, partitions), or ''."""
    seen = {n.name: n for n in nodes}
    for node in preset.nodes():
        info = seen.get(node.name)
        if info is None:
            return (f"needs the nodes of fleet {preset.name!r}; this cluster has no "
                    f"node {node.name}")
        gpus = {node.pool.gpu.type: node.pool.gpu.count} if node.pool.gpu else {}
        if info.gpus != gpus:
            return (f"needs fleet {preset.name!r}: node {node.name} should have GPUs "
                    f"{gpus or 'none'}, it has {info.gpus or 'none'}")
        missing = set(preset.partitions_of(node.pool)) - set(info.partitions)
        if missing:
            return (f"needs fleet {preset.name!r}: node {node.name} is not in "
                    f"partition(s) {', '.join(sorted(missing))}")
    return ""


def fleet_mismatch(
    need: FleetRequirement,
    fleet: Fleet | None,
    nodes: list[NodeInfo],
    policy: dict[str, set[str]] | None = None,
) -> str:
    """Why the cluster's fleet does not meet `need`, or '' when it does."""
    if need.task_binding and fleet is not None:
        return ("needs tasks bound to the CPUs of the sockets Slurm models; the kit's "
                "node containers run on this machine's own CPUs, so a task cannot be "
                "placed on a modelled socket (run it on a real cluster)")
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
    if need.shards and not any(n.shards for n in nodes):
        return "needs a node with gres/shard (give a pool's gpu shards_per_gpu)"
    for gpu_type, per_gpu in need.shards_per_gpu.items():
        if not any(n.gpus.get(gpu_type) and n.shards == per_gpu * n.gpus[gpu_type]
                   for n in nodes):
            return f"needs a node whose {gpu_type} GPUs have {per_gpu} shards each"
    for kind in ("qos", "accounts"):
        have = (policy or {}).get(kind, set())
        missing = [name for name in getattr(need, kind) if name not in have]
        if missing:
            return (f"needs {'QOS' if kind == 'qos' else 'account'} "
                    f"{', '.join(missing)} in the accounting policy (it has "
                    f"{', '.join(sorted(have)) or 'none'})")
    return ""
