"""The fleet model: one validated description of the simulated cluster.

A fleet spec (YAML) names pools of identical nodes, the partitions that group
them and a few scheduler settings. Everything Slurm and compose need is
rendered from the validated `Fleet`; nothing downstream reads the YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from sim.errors import SpecError
from sim.policy import Policy
from sim.policy import problem as policy_problem
from sim.specfile import read_yaml, validate

# Node, pool and host names become Slurm node names, container names and DNS
# labels at once, so they follow the strictest of the three.
NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
GPU_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
FEATURE_PATTERN = r"^[A-Za-z0-9_]+$"
PARTITION_PATTERN = r"^[a-z][a-z0-9_-]*$"
TIME_PATTERN = r"^(UNLIMITED|INFINITE|\d+|\d+:\d{2}(:\d{2})?|\d+-\d+(:\d{2}){0,2})$"

MAX_NAME = 63
# The largest common GPU servers carry 8 to 16 GPUs on one board.
MAX_GPUS_PER_NODE = 16
MAX_NODES = 4096
MAX_SOCKETS = 8
MAX_THREADS_PER_CORE = 8
MAX_SHARDS_PER_GPU = 128
# Service names of compose.yaml; a node may not take one.
RESERVED_NAMES = frozenset(
    {"keygen", "mariadb", "slurmdbd", "slurmctld", "policy", "login", "sim",
     "fleet", "localhost"}
)
# Fleets up to this many nodes get one container per node, easy to read and
# to fault one by one; larger ones pack nodes into shared containers.
ONE_CONTAINER_PER_NODE_UP_TO = 16
AUTO_NODES_PER_CONTAINER = 32


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CORE_RANGES = r"^\d+(-\d+)?(,\d+(-\d+)?)*$"


class Gpu(_Spec):
    type: str = Field(pattern=GPU_TYPE_PATTERN, max_length=32)
    count: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    # Per GPU, the cores near it (gres.conf Cores=), as "0-15" or "0-7,16-23".
    # Left out, GPUs are split evenly over the sockets in index order.
    cores: tuple[Annotated[str, Field(pattern=CORE_RANGES)], ...] | None = None
    # Per GPU, its links to every GPU of the node (gres.conf Links=): -1 for
    # itself, 0 for none, otherwise the number of links. Bookkeeping only:
    # no mode of this lab shows what links do.
    links: tuple[tuple[int, ...], ...] | None = None
    # gres/shard: how many shares of each GPU jobs may ask for with
    # --gres=shard:N (several jobs then share one GPU). Left out, no shards.
    shards_per_gpu: int | None = Field(default=None, ge=1, le=MAX_SHARDS_PER_GPU)

    @model_validator(mode="after")
    def _per_gpu(self) -> Gpu:
        for name in ("cores", "links"):
            given = getattr(self, name)
            if given is not None and len(given) != self.count:
                raise ValueError(f"{name} has {len(given)} entries for "
                                 f"{self.count} GPUs; give one per GPU")
        for i, row in enumerate(self.links or ()):
            if len(row) != self.count:
                raise ValueError(f"links[{i}] has {len(row)} numbers; give one per "
                                 f"GPU ({self.count})")
            if row[i] != -1 or any(n < 0 for j, n in enumerate(row) if j != i):
                raise ValueError(f"links[{i}] must be -1 for GPU {i} itself and 0 "
                                 f"or more for the others (got {list(row)})")
            if any(self.links[j][i] != n for j, n in enumerate(row)):
                raise ValueError(f"links[{i}] disagrees with the other rows: a link "
                                 "between two GPUs counts the same both ways")
        return self


class Pool(_Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=40)
    nodes: int = Field(ge=1, le=MAX_NODES)
    node_prefix: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]*$")
    gpu: Gpu | None = None
    cpus: int | None = Field(default=None, ge=1)
    # Left out (None), sockets and cores_per_socket are derived from cpus.
    sockets: int | None = Field(default=None, ge=1, le=MAX_SOCKETS)
    cores_per_socket: int | None = Field(default=None, ge=1)
    threads_per_core: int = Field(default=1, ge=1, le=MAX_THREADS_PER_CORE)
    memory_mb: int = Field(ge=1)
    features: tuple[Annotated[str, Field(pattern=FEATURE_PATTERN)], ...] = ()
    weight: int = Field(default=1, ge=1, le=65533)

    @model_validator(mode="after")
    def _topology(self) -> Pool:
        # `cpus` is a shorthand: it fills in sockets and cores when they are
        # left out, and must agree with them when they are given.
        sockets = self.sockets or (2 if self.cpus and self.cpus % 2 == 0 else 1)
        if self.cpus is not None and sockets > self.cpus:
            raise ValueError(f"{sockets} sockets are more than the {self.cpus} CPUs; "
                             "every socket needs a core")
        cores = self.cores_per_socket
        if not cores:
            if self.cpus is None:
                raise ValueError("give cpus, or sockets and cores_per_socket")
            if self.cpus % (sockets * self.threads_per_core):
                raise ValueError(
                    f"cpus {self.cpus} does not split evenly over {sockets} "
                    f"sockets of {self.threads_per_core} threads per core"
                )
            cores = self.cpus // (sockets * self.threads_per_core)
        total = sockets * cores * self.threads_per_core
        if self.cpus is not None and self.cpus != total:
            raise ValueError(
                f"cpus {self.cpus} disagrees with sockets x cores_per_socket x "
                f"threads_per_core = {total}"
            )
        object.__setattr__(self, "sockets", sockets)
        object.__setattr__(self, "cores_per_socket", cores)
        object.__setattr__(self, "cpus", total)
        if self.gpu and self.gpu.count > sockets * cores:
            raise ValueError(
                f"gpu.count {self.gpu.count} is more than the node's "
                f"{sockets * cores} cores can serve (one core per GPU at least)"
            )
        for i, ranges in enumerate(self.gpu.cores or () if self.gpu else ()):
            highest = max(core_numbers(ranges))
            if highest >= sockets * cores:
                raise ValueError(
                    f"gpu.cores[{i}] {ranges!r} names core {highest}; the node has "
                    f"cores 0-{sockets * cores - 1} ({sockets} sockets of {cores})"
                )
        return self

    @property
    def cores(self) -> int:
        return self.sockets * self.cores_per_socket

    @property
    def gpus(self) -> int:
        return self.gpu.count if self.gpu else 0

    @property
    def shards(self) -> int:
        """The node's gres/shard count: its GPUs' shares in all."""
        if not (self.gpu and self.gpu.shards_per_gpu):
            return 0
        return self.gpu.count * self.gpu.shards_per_gpu

    def node_names(self) -> list[str]:
        prefix = self.node_prefix if self.node_prefix is not None else f"{self.name}-"
        width = len(str(self.nodes))
        return [f"{prefix}{i:0{width}d}" for i in range(1, self.nodes + 1)]

    def gpu_cores(self, index: int) -> str:
        """The cores near GPU `index`, as gres.conf's Cores= takes them."""
        if self.gpu and self.gpu.cores:
            return self.gpu.cores[index]
        socket = index * self.sockets // self.gpus
        first = socket * self.cores_per_socket
        return f"{first}-{first + self.cores_per_socket - 1}"

    def gpu_links(self, index: int) -> str | None:
        if not (self.gpu and self.gpu.links):
            return None
        return ",".join(str(n) for n in self.gpu.links[index])


class Partition(_Spec):
    name: str = Field(pattern=PARTITION_PATTERN, max_length=40)
    pools: tuple[str, ...] = Field(min_length=1)
    default: bool = False
    max_time: str = Field(default="UNLIMITED", pattern=TIME_PATTERN)
    default_time: str | None = Field(default=None, pattern=TIME_PATTERN)
    priority_tier: int = Field(default=1, ge=0, le=65533)
    max_nodes: int | None = Field(default=None, ge=1)
    oversubscribe: Literal["NO", "YES", "FORCE", "EXCLUSIVE"] = "NO"
    # Memory a job gets per GPU when it gives no --mem (DefMemPerGPU).
    def_mem_per_gpu_mb: int | None = Field(default=None, ge=1)


class Scheduler(_Spec):
    """Settings that make scenarios quick without changing what they show."""

    backfill_interval_s: int = Field(default=1, ge=1, le=3600)
    def_mem_per_cpu_mb: int = Field(default=1024, ge=1)
    min_job_age_s: int = Field(default=600, ge=2)
    slurmd_timeout_s: int = Field(default=10, ge=5, le=3600)
    # How long a requeued job waits before it may start again (Slurm's
    # credential lifetime, AuthInfo=cred_expire; Slurm's default is 120).
    requeue_delay_s: int = Field(default=15, ge=5, le=3600)
    # How often fairshare and job priorities are recalculated
    # (PriorityCalcPeriod; Slurm's default is 5 minutes, its least 1).
    priority_calc_period_min: int = Field(default=1, ge=1, le=1440)


class Containers(_Spec):
    nodes_per_container: int | Literal["auto"] = "auto"

    @field_validator("nodes_per_container")
    @classmethod
    def _in_range(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= 256:
            raise ValueError("must be 'auto' or 1 to 256")
        return value


class Fleet(_Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=40)
    description: str = ""
    cluster_name: str = Field(default="gpusim", pattern=r"^[a-z][a-z0-9_]*$",
                              max_length=40)
    pools: tuple[Pool, ...] = Field(min_length=1)
    partitions: tuple[Partition, ...] = Field(min_length=1)
    scheduler: Scheduler = Scheduler()
    containers: Containers = Containers()
    policy: Policy = Policy()

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    def gpu_types(self) -> list[str]:
        return sorted({p.gpu.type for p in self.pools if p.gpu})

    def has_shards(self) -> bool:
        return any(p.shards for p in self.pools)

    def gres_keys(self) -> set[str]:
        """The GRES a request or a policy limit may name: gpu, gpu:TYPE, shard."""
        if not self.gpu_types():
            return set()
        keys = {"gpu", *(f"gpu:{t}" for t in self.gpu_types())}
        return keys | ({"shard"} if self.has_shards() else set())

    def accounting_tres(self) -> list[str]:
        return sorted({"gres/gpu", *(f"gres/{key}" for key in self.gres_keys())})

    def nodes(self) -> list[Node]:
        return [Node(name, pool) for pool in self.pools for name in pool.node_names()]

    def partitions_of(self, pool: Pool) -> list[str]:
        return [p.name for p in self.partitions if pool.name in p.pools]

    def hosts(self) -> list[Host]:
        """Containers that run the fleet's slurmd, each with the nodes it serves."""
        total = sum(p.nodes for p in self.pools)
        per = self.containers.nodes_per_container
        if per == "auto":
            small = total <= ONE_CONTAINER_PER_NODE_UP_TO
            per = 1 if small else AUTO_NODES_PER_CONTAINER
        hosts: list[Host] = []
        for pool in self.pools:
            names = pool.node_names()
            if per == 1:
                hosts += [Host(name, pool, (name,)) for name in names]
                continue
            for k, start in enumerate(range(0, len(names), per), 1):
                hosts.append(Host(f"{pool.name}-host{k}", pool,
                                  tuple(names[start:start + per])))
        return hosts


@dataclass(frozen=True)
class Node:
    name: str
    pool: Pool


@dataclass(frozen=True)
class Host:
    """One node container: its name is also its hostname and compose service."""

    name: str
    pool: Pool
    nodes: tuple[str, ...]


def core_numbers(ranges: str) -> list[int]:
    numbers = []
    for piece in ranges.split(","):
        low, _, high = piece.partition("-")
        numbers += range(int(low), int(high or low) + 1)
    return numbers


def load_fleet(path: Path) -> Fleet:
    """Read and validate a fleet spec; any problem is one line naming the field."""
    fleet = validate(Fleet, read_yaml(path), path)
    problem = _cross_check(fleet)
    if problem:
        raise SpecError(f"{path}: {problem}")
    return fleet


def _cross_check(fleet: Fleet) -> str | None:
    """Rules that span fields: unique names, references that must resolve."""
    pool_names = [p.name for p in fleet.pools]
    for i, name in enumerate(pool_names):
        if name in pool_names[:i]:
            return f"pools[{i}].name: duplicate pool name {name!r}"
    seen: dict[str, str] = {}
    for i, pool in enumerate(fleet.pools):
        for node in pool.node_names():
            if node in seen:
                return (f"pools[{i}]: node name {node!r} is also a node of pool "
                        f"{seen[node]!r}; set node_prefix to tell them apart")
            if node in RESERVED_NAMES:
                reserved = ", ".join(sorted(RESERVED_NAMES))
                return (f"pools[{i}]: node name {node!r} is reserved for a "
                        f"cluster service (reserved: {reserved})")
            if len(node) > MAX_NAME:
                return f"pools[{i}]: node name {node!r} is longer than {MAX_NAME}"
            if not re.match(NAME_PATTERN, node):
                return (f"pools[{i}].node_prefix: node name {node!r} must match "
                        f"{NAME_PATTERN}")
            seen[node] = pool.name
    if len(seen) > MAX_NODES:
        return f"pools: {len(seen)} nodes in all, at most {MAX_NODES} are allowed"
    shared = {h.name for h in fleet.hosts() if h.nodes != (h.name,)}
    clash = sorted(shared & set(seen))
    if clash:
        return f"pools: container name {clash[0]!r} is also a node name"
    partition_names = [p.name for p in fleet.partitions]
    for i, part in enumerate(fleet.partitions):
        if part.name in partition_names[:i]:
            return f"partitions[{i}].name: duplicate partition name {part.name!r}"
        for j, pool in enumerate(part.pools):
            if pool not in pool_names:
                return (f"partitions[{i}].pools[{j}]: no pool named {pool!r} "
                        f"(pools: {', '.join(pool_names)})")
    defaults = [p.name for p in fleet.partitions if p.default]
    if len(defaults) > 1:
        return (f"partitions: {len(defaults)} are default "
                f"({', '.join(defaults)}); at most one may be")
    for i, part in enumerate(fleet.partitions):
        per_gpu = part.def_mem_per_gpu_mb
        for pool in (fleet.pool(name) for name in part.pools):
            if per_gpu and pool.gpus and per_gpu * pool.gpus > pool.memory_mb:
                return (f"partitions[{i}].def_mem_per_gpu_mb: {per_gpu} x "
                        f"{pool.gpus} GPUs is more than pool {pool.name!r}'s "
                        f"memory_mb {pool.memory_mb}")
    smallest = min(fleet.pools, key=lambda p: p.memory_mb // p.cpus)
    per_cpu = smallest.memory_mb // smallest.cpus
    default = fleet.scheduler.def_mem_per_cpu_mb
    if default > per_cpu:
        return (f"scheduler.def_mem_per_cpu_mb: {default} is "
                f"more than pool {smallest.name!r} has per CPU ({per_cpu}); "
                f"jobs could never fit")
    return policy_problem(fleet.policy, fleet.gres_keys())
