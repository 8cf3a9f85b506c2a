"""The Slurm client: Slurm's own commands with --json, parsed into typed records.

`Slurm` builds the commands and parses their output; a `Transport` runs them,
either inside the compose cluster (`sim.cluster.SessionTransport` through one
long-lived command session, or `ExecTransport` with a docker exec per
command) or on the machine the kit runs on (`LocalTransport`, for a real
cluster's login node).
Nothing here scrapes human-formatted output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sim.errors import CommandError, SimError
from sim.hostlist import expand

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def check(self) -> CommandResult:
        if self.exit_code != 0:
            raise CommandError(
                list(self.argv), self.exit_code, self.stdout, self.stderr
            )
        return self


class Transport(Protocol):
    """Runs one command where Slurm's client commands work."""

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult: ...


class LocalTransport:
    """Runs commands on this machine: a real cluster's login node."""

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        full = list(argv)
        if user and user != _current_user():
            full = ["runuser", "-u", user, "--", *full]
        # Jobs write their output where they were submitted from: the user's
        # home, as on a login node.
        cwd = _home_of(user) if user else None
        try:
            done = subprocess.run(
                full,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                cwd=cwd,
            )
        except FileNotFoundError as exc:
            raise SimError(f"{full[0]}: not found on this machine") from exc
        return CommandResult(tuple(full), done.returncode, done.stdout, done.stderr)


def _home_of(user: str) -> str | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


class SubmitRejected(SimError):
    """Slurm refused a job at submission; `message` is Slurm's own words."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(f"submission rejected: {message}")


@dataclass(frozen=True)
class GpuAllocation:
    """GPUs a job holds on one node: `gpu:a100:2(IDX:0-1)` on a100-1."""

    node: str
    type: str | None
    count: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class ShardAllocation:
    """Shards a job holds on one node, per GPU index: `shard:3(0/4,3/4)` -> (0, 3)."""

    node: str
    per_gpu: tuple[int, ...]

    @property
    def count(self) -> int:
        return sum(self.per_gpu)

    @property
    def indices(self) -> tuple[int, ...]:
        """The GPUs its shards come from."""
        return tuple(i for i, n in enumerate(self.per_gpu) if n)


@dataclass(frozen=True)
class Job:
    job_id: int
    name: str
    user: str
    state: str
    flags: tuple[str, ...]
    reason: str
    partition: str
    nodes: tuple[str, ...]
    gpus: tuple[GpuAllocation, ...]
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    array_job_id: int | None = None
    array_task_id: int | None = None
    restart_count: int = 0
    tres_per_node: str = ""
    exit_code: int | None = None
    cpus: int = 0
    memory_mb: int = 0
    # (node, socket, core) of every core the job holds, while it holds them.
    cores: tuple[tuple[str, int, int], ...] = ()
    shards: tuple[ShardAllocation, ...] = ()
    account: str = ""
    qos: str = ""
    priority: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sockets(self) -> dict[str, tuple[int, ...]]:
        """The sockets whose cores the job holds, per node."""
        found: dict[str, set[int]] = {}
        for node, socket, _ in self.cores:
            found.setdefault(node, set()).add(socket)
        return {node: tuple(sorted(s)) for node, s in found.items()}

    @property
    def label(self) -> str:
        """How Slurm's own commands name the job: `42` or `41_3` for an array task."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return str(self.job_id)

    @property
    def gpu_indices(self) -> dict[str, tuple[int, ...]]:
        return {a.node: a.indices for a in self.gpus}

    @property
    def gpu_count(self) -> int:
        return sum(a.count for a in self.gpus)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    state: tuple[str, ...]
    partitions: tuple[str, ...]
    features: tuple[str, ...]
    gpus: dict[str, int]
    gpus_used: dict[str, tuple[int, ...]]
    # gres/shard: the node's shards in all, and those held, per GPU index.
    shards: int
    shards_used: tuple[int, ...]
    cpus: int
    alloc_cpus: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    real_memory_mb: int
    alloc_memory_mb: int
    weight: int
    reason: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def base_state(self) -> str:
        return self.state[0] if self.state else "UNKNOWN"

    def has(self, flag: str) -> bool:
        return flag in self.state


class Slurm:
    """Slurm's client commands, as one small interface."""

    def __init__(self, transport: Transport, *, admin: str | None = None):
        self.transport = transport
        # Observations run as an administrator so that every user's jobs show.
        self.admin = admin

    def version(self) -> str:
        result = self.transport.run(["sinfo", "--version"]).check()
        return result.stdout.split()[-1]

    def submit(self, options: Sequence[str], script: str, *, user: str) -> int:
        """Submit a batch script as `user`; returns the job id (the array's id)."""
        argv = ["sbatch", "--parsable", *options]
        result = self.transport.run(argv, user=user, stdin=script)
        if result.exit_code != 0:
            raise SubmitRejected(_slurm_error(result.stderr or result.stdout))
        lines = result.stdout.strip().splitlines()
        if not lines or not lines[-1].split(";")[0].isdigit():
            raise CommandError(argv, result.exit_code, result.stdout,
                               "sbatch printed no job id")
        return int(lines[-1].split(";")[0])

    def submit_many(self, jobs: Sequence[tuple[Sequence[str], str]], *, user: str,
                    parallel: int = 4) -> list[int | SubmitRejected]:
        """Submit many batch jobs as `user` in one round trip to the cluster.

        Each entry is (sbatch options, script). One small driver runs sbatch
        for each where the commands are, `parallel` at a time, so the cost
        per job is sbatch's own, not a round trip's. Returns a job id or the
        rejection, per job, in the order given; with `parallel` above 1,
        Slurm may number them in another order (use 1 where order matters).
        """
        payload = json.dumps({"parallel": max(1, parallel),
                              "jobs": [[list(o), script] for o, script in jobs]})
        result = self.transport.run(["python3", "-c", _SUBMIT_MANY], user=user,
                                    stdin=payload, timeout_s=60 + 2 * len(jobs))
        outcomes = json.loads(result.check().stdout)
        return [int(o[1]) if o[0] == 0 else SubmitRejected(_slurm_error(o[1]))
                for o in outcomes]

    def jobs(self, job_ids: Sequence[int] | None = None, *, ended: bool = True
             ) -> list[Job]:
        """Every job slurmctld still knows (or just these), arrays as their tasks;
        without `ended`, only those pending, running or completing."""
        argv = ["squeue", "--all", "--json"]
        if ended:
            argv.insert(2, "--states=all")
        if job_ids is not None:
            argv.insert(1, f"--jobs={','.join(str(i) for i in job_ids)}")
        return parse_jobs(self._json(argv))

    def job(self, job_id: int) -> list[Job]:
        """One job, or every task of an array, as `scontrol show job` sees it."""
        result = self.transport.run(
            ["scontrol", "show", "job", "--json", str(job_id)], user=self.admin
        )
        if result.exit_code != 0 and "Invalid job id" in result.stderr + result.stdout:
            return []
        return parse_jobs(_loads(result.check()))

    def nodes(self) -> list[NodeInfo]:
        return parse_nodes(self._json(["scontrol", "show", "node", "--json"]))

    def accounting(self, job_ids: Sequence[int]) -> list[dict[str, Any]]:
        """sacct's records of these jobs, as Slurm's JSON."""
        ids = ",".join(str(i) for i in job_ids)
        data = self._json(["sacct", "--json", "--allusers", "-j", ids])
        return list(data.get("jobs", []))

    def cancel(
        self, job_id: int | str, *, signal: str | None = None, user: str | None = None
    ) -> None:
        argv = ["scancel", str(job_id)]
        if signal:
            argv[1:1] = ["--signal", signal, "--full"]
        self.transport.run(argv, user=user or self.admin).check()

    def update_node(self, node: str, **settings: str) -> None:
        pairs = [f"{key}={value}" for key, value in settings.items()]
        self.transport.run(
            ["scontrol", "update", f"NodeName={node}", *pairs], user=self.admin
        ).check()

    def qos_names(self) -> list[str]:
        return self._names(["show", "qos", "format=name"])

    def account_names(self) -> list[str]:
        return self._names(["show", "account", "format=account"])

    def _names(self, query: list[str]) -> list[str]:
        result = self.transport.run(["sacctmgr", "-n", "-P", *query], user=self.admin)
        return [line.strip() for line in result.check().stdout.splitlines()
                if line.strip()]

    def reset_usage(self, account: str) -> None:
        """Forget an account's fairshare usage (its RawUsage and its users')."""
        self.transport.run(
            ["sacctmgr", "-i", "modify", "account", "where", f"name={account}",
             "set", "RawUsage=0"], user=self.admin
        ).check()

    def reconfigure(self) -> None:
        self.transport.run(["scontrol", "reconfigure"], user=self.admin).check()

    def _json(self, argv: list[str]) -> dict[str, Any]:
        return _loads(self.transport.run(argv, user=self.admin).check())


# Runs where Slurm's commands are: sbatch for each [options, script] of the
# JSON read from stdin, `parallel` at a time; prints [exit code, job id or
# error] per job, in the order given.
_SUBMIT_MANY = """
import json, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
request = json.load(sys.stdin)
def submit(job):
    options, script = job
    done = subprocess.run(["sbatch", "--parsable", *options], input=script,
                          capture_output=True, text=True)
    said = done.stdout.strip().split(";")[0] if done.returncode == 0 else done.stderr
    return [done.returncode, said]
with ThreadPoolExecutor(request["parallel"]) as pool:
    json.dump(list(pool.map(submit, request["jobs"])), sys.stdout)
"""


def _loads(result: CommandResult) -> dict[str, Any]:
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise CommandError(
            list(result.argv),
            result.exit_code,
            result.stdout[:500],
            f"output is not JSON: {exc}",
        ) from None
    errors = data.get("errors") or []
    if errors:
        log.warning("%s reported errors: %s", result.argv[0], errors)
    return data


def _slurm_error(text: str) -> str:
    """Slurm's reason from `sbatch: error: Batch job submission failed: ...`."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "no message"
    return re.sub(r"^s\w+: error: ", "", lines[-1])


# ---- parsing of Slurm's JSON ---------------------------------------------------


def _number(value: Any) -> int | None:
    """Slurm's numbers come plain or as {"set", "infinite", "number"}."""
    if isinstance(value, dict):
        if not value.get("set", False) or value.get("infinite", False):
            return None
        return value.get("number")
    return value


def _time(value: Any) -> datetime | None:
    seconds = _number(value)
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


_GRES = re.compile(
    r"(?P<name>[a-z_]+)(?::(?P<type>[^:(,]+))?:(?P<count>\d+)"
    r"(?:\((?P<kind>IDX|S):(?P<list>[^)]*)\))?"
)


def parse_gres(text: str) -> list[tuple[str, str | None, int, tuple[int, ...]]]:
    """`gpu:a100:2(IDX:0,2-3)` -> [("gpu", "a100", 2, (0, 2, 3))]; `(null)` -> []."""
    found = []
    for m in _GRES.finditer(text or ""):
        indices = _index_list(m["list"]) if m["kind"] == "IDX" else ()
        found.append((m["name"], m["type"], int(m["count"]), indices))
    return found


_SHARDS = re.compile(
    r"(?:^|,)shard(?::[^:(,]+)?:(?P<count>\d+)\((?P<per_gpu>[\d/,]+)\)"
)


def parse_shards(text: str) -> tuple[int, ...] | None:
    """`shard:a100:5(3/4,2/4)` -> (3, 2), the shards held per GPU index; None
    when `text` names no shards."""
    match = _SHARDS.search(text or "")
    if not match:
        return None
    return tuple(int(p.split("/")[0]) for p in match["per_gpu"].split(",") if p)


def _index_list(text: str) -> tuple[int, ...]:
    indices: list[int] = []
    for piece in text.split(","):
        if not piece or piece == "N/A":
            continue
        low, _, high = piece.partition("-")
        indices += range(int(low), int(high or low) + 1)
    return tuple(indices)


def _job_gpus(raw: dict[str, Any], nodes: tuple[str, ...]) -> tuple[GpuAllocation, ...]:
    # gres_detail has one entry per allocated node, in node-list order.
    allocations = []
    for node, detail in zip(nodes, raw.get("gres_detail") or [], strict=False):
        for name, gpu_type, count, indices in parse_gres(detail):
            if name == "gpu":
                allocations.append(GpuAllocation(node, gpu_type, count, indices))
    return tuple(allocations)


def _job_shards(raw: dict[str, Any], nodes: tuple[str, ...]
                ) -> tuple[ShardAllocation, ...]:
    found = []
    for node, detail in zip(nodes, raw.get("gres_detail") or [], strict=False):
        per_gpu = parse_shards(detail)
        if per_gpu and any(per_gpu):
            found.append(ShardAllocation(node, per_gpu))
    return tuple(found)


def parse_job(raw: dict[str, Any]) -> Job:
    states = raw.get("job_state") or ["UNKNOWN"]
    nodes = tuple(expand(raw.get("nodes") or ""))
    exit_code = raw.get("exit_code") or {}
    return Job(
        job_id=raw["job_id"],
        name=raw.get("name", ""),
        user=raw.get("user_name", ""),
        state=states[0],
        flags=tuple(states[1:]),
        reason=raw.get("state_reason") or "None",
        partition=raw.get("partition", ""),
        nodes=nodes,
        gpus=_job_gpus(raw, nodes),
        submit_time=_time(raw.get("submit_time")),
        # A pending job's start_time is Slurm's estimate, and a job that
        # never got nodes gets start = end when it ends: neither is a start.
        start_time=None if states[0] == "PENDING" or not nodes
        else _time(raw.get("start_time")),
        end_time=_time(raw.get("end_time"))
        if states[0] not in ("PENDING", "RUNNING")
        else None,
        array_job_id=_number(raw.get("array_job_id")) or None,
        array_task_id=_number(raw.get("array_task_id")),
        restart_count=raw.get("restart_cnt", 0) or 0,
        tres_per_node=raw.get("tres_per_node", ""),
        exit_code=_number(exit_code.get("return_code")) if exit_code else None,
        cpus=_number(raw.get("cpus")) or 0,
        memory_mb=_tres_memory_mb(raw.get("tres_alloc_str") or ""),
        cores=_allocated_cores(raw.get("job_resources") or {}),
        shards=_job_shards(raw, nodes),
        account=raw.get("account", ""),
        qos=raw.get("qos", ""),
        priority=_number(raw.get("priority")) or 0,
        raw=raw,
    )


_MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _tres_memory_mb(tres: str) -> int:
    """mem=16G in `cpu=8,mem=16G,...` -> 16384."""
    match = re.search(r"(?:^|,)mem=([\d.]+)([KMGT]?)", tres)
    if not match:
        return 0
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2) or "M"])


def _allocated_cores(resources: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
    nodes = resources.get("nodes") or {}
    cores = []
    for node in nodes.get("allocation", []) if isinstance(nodes, dict) else []:
        for socket in node.get("sockets", []):
            for core in socket.get("cores", []):
                if "ALLOCATED" in core.get("status", []):
                    cores.append((node["name"], socket["index"], core["index"]))
    return tuple(cores)


def parse_jobs(data: dict[str, Any]) -> list[Job]:
    return [parse_job(raw) for raw in data.get("jobs", [])]


def parse_node(raw: dict[str, Any]) -> NodeInfo:
    total: dict[str, int] = {}
    for name, gpu_type, count, _ in parse_gres(raw.get("gres", "")):
        if name == "gpu":
            total[gpu_type or ""] = total.get(gpu_type or "", 0) + count
    used: dict[str, tuple[int, ...]] = {}
    for name, gpu_type, _, indices in parse_gres(raw.get("gres_used", "")):
        if name == "gpu":
            used[gpu_type or ""] = used.get(gpu_type or "", ()) + indices
    shards = sum(count for name, _, count, _ in parse_gres(raw.get("gres", ""))
                 if name == "shard")
    return NodeInfo(
        name=raw["name"],
        state=tuple(raw.get("state") or ["UNKNOWN"]),
        partitions=tuple(raw.get("partitions") or []),
        features=tuple(raw.get("features") or []),
        gpus=total,
        gpus_used=used,
        shards=shards,
        shards_used=parse_shards(raw.get("gres_used", "")) or (),
        cpus=raw.get("cpus", 0),
        alloc_cpus=raw.get("alloc_cpus", 0),
        sockets=raw.get("sockets", 0),
        cores_per_socket=raw.get("cores", 0),
        threads_per_core=raw.get("threads", 0),
        real_memory_mb=raw.get("real_memory", 0),
        alloc_memory_mb=raw.get("alloc_memory", 0),
        weight=raw.get("weight", 0),
        reason=raw.get("reason", ""),
        raw=raw,
    )


def parse_nodes(data: dict[str, Any]) -> list[NodeInfo]:
    return [parse_node(raw) for raw in data.get("nodes", [])]
