"""The fleet model: what `load_fleet` accepts, and how it refuses the rest.

Every bad spec must raise SpecError with one line that starts with the file
and the field path, then says what was given and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.errors import SpecError
from sim.fleet import AUTO_NODES_PER_CONTAINER, RESERVED_NAMES, Fleet, load_fleet

FLEETS = Path(__file__).resolve().parents[1] / "slurm-conf" / "fleets"
PRESETS = sorted(FLEETS.glob("*.yaml"))

A100 = "{name: a100, nodes: 2, cpus: 16, memory_mb: 64000}"
GPU_PARTITION = "{name: gpu, pools: [a100]}"


def spec(pools: str = A100, partitions: str = GPU_PARTITION, top: str = "") -> str:
    """A small fleet spec; `pools` and `partitions` are YAML flow mappings."""
    return f"name: t\n{top}pools: [{pools}]\npartitions: [{partitions}]\n"


def pool(name: str, rest: str) -> str:
    """A spec of one pool, `name`, and one partition, `gpu`, over it."""
    return spec(pools=f"{{name: {name}, {rest}}}",
                partitions=f"{{name: gpu, pools: [{name}]}}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Fleet:
    return load_fleet(write(tmp_path, text))


def refusal(path: Path) -> str:
    """The message load_fleet raises for `path`, checked to be one line."""
    with pytest.raises(SpecError) as caught:
        load_fleet(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def bad(case: str, text: str, field: str | None, *fragments: str) -> object:
    """A bad spec, the field path its message names (None: the whole file)."""
    return pytest.param(text, field, fragments, id=case)


BAD_SPECS = [
    # Unknown keys, with the keys allowed at that place.
    bad("unknown-top-key", spec(top="colour: red\n"),
        "colour", "unknown key", "allowed: name, description", "partitions"),
    bad("unknown-pool-key",
        spec(pools="{name: a100, nodes: 1, cpus: 8, memory_mb: 64000, ram: 1}"),
        "pools[0].ram", "unknown key", "allowed:", "memory_mb"),
    bad("unknown-gpu-key",
        pool("a100", "nodes: 1, cpus: 8, memory_mb: 64000, "
             "gpu: {type: a100, count: 1, vram: 80}"),
        "pools[0].gpu.vram", "unknown key", "allowed: type, count"),
    bad("unknown-partition-key",
        spec(partitions="{name: gpu, pools: [a100], colour: red}"),
        "partitions[0].colour", "unknown key", "allowed:", "max_time"),
    bad("unknown-scheduler-key", spec(top="scheduler: {interval: 5}\n"),
        "scheduler.interval", "unknown key", "backfill_interval_s"),
    bad("unknown-key-like-a-type-tag",
        spec(pools="{name: a100, nodes: 1, cpus: 8, memory_mb: 64000, "
             "interconnect: ib}"),
        "pools[0].interconnect", "unknown key"),
    bad("missing-key", spec(pools="{name: a100, nodes: 1, cpus: 8}"),
        "pools[0].memory_mb", "required"),
    # Names: pools and nodes.
    bad("duplicate-pool-name", spec(pools=f"{A100}, {A100}"),
        "pools[1].name", "duplicate pool name 'a100'"),
    bad("duplicate-node-name",
        spec(pools="{name: a, nodes: 2, cpus: 8, memory_mb: 64000, node_prefix: n},"
             " {name: b, nodes: 3, cpus: 8, memory_mb: 64000, node_prefix: n}",
             partitions="{name: gpu, pools: [a, b]}"),
        "pools[1]", "'n1'", "pool 'a'", "node_prefix"),
    bad("pool-name-uppercase", pool("A100", "nodes: 1, cpus: 8, memory_mb: 64000"),
        "pools[0].name", "must match", "(got 'A100')"),
    bad("pool-name-underscore", pool("a_100", "nodes: 1, cpus: 8, memory_mb: 64000"),
        "pools[0].name", "must match", "(got 'a_100')"),
    bad("pool-name-leading-digit", pool("1a", "nodes: 1, cpus: 8, memory_mb: 64000"),
        "pools[0].name", "must match", "(got '1a')"),
    bad("pool-name-trailing-hyphen", pool("a-", "nodes: 1, cpus: 8, memory_mb: 64000"),
        "pools[0].name", "must match", "(got 'a-')"),
    bad("node-prefix-double-hyphen",
        pool("a", "nodes: 1, cpus: 8, memory_mb: 64000, node_prefix: n--"),
        "pools[0].node_prefix", "'n--1'", "must match"),
    bad("node-name-too-long",
        pool("a", f"nodes: 1, cpus: 8, memory_mb: 64000, node_prefix: {'n' * 63}"),
        "pools[0]", "longer than 63"),
    bad("container-name-is-a-node-name",
        spec(pools="{name: a, nodes: 9, cpus: 8, memory_mb: 64000, "
             "node_prefix: a-host}, {name: b, nodes: 8, cpus: 8, memory_mb: 64000}",
             partitions="{name: gpu, pools: [a, b]}"),
        "pools", "container name 'a-host1'"),
    bad("too-many-nodes",
        spec(pools="{name: a, nodes: 4000, cpus: 8, memory_mb: 64000}, "
             "{name: b, nodes: 100, cpus: 8, memory_mb: 64000}",
             partitions="{name: gpu, pools: [a, b]}"),
        "pools", "4100 nodes", "at most 4096"),
    # GPUs.
    bad("zero-gpus",
        pool("a100", "nodes: 1, cpus: 8, memory_mb: 64000, "
             "gpu: {type: a100, count: 0}"),
        "pools[0].gpu.count", "at least 1", "(got 0)"),
    bad("gpus-beyond-a-board",
        pool("a100", "nodes: 1, cpus: 64, memory_mb: 640000, "
             "gpu: {type: a100, count: 17}"),
        "pools[0].gpu.count", "at most 16", "(got 17)"),
    bad("gpus-beyond-cores",
        pool("a100", "nodes: 1, cpus: 4, memory_mb: 64000, "
             "gpu: {type: a100, count: 8}"),
        "pools[0]", "gpu.count 8", "4 cores"),
    bad("gpus-beyond-cores-not-threads",
        pool("a100", "nodes: 1, cpus: 8, threads_per_core: 2, memory_mb: 64000, "
             "gpu: {type: a100, count: 8}"),
        "pools[0]", "gpu.count 8", "4 cores"),
    bad("gpu-type-uppercase",
        pool("a100", "nodes: 1, cpus: 8, memory_mb: 64000, "
             "gpu: {type: A100, count: 1}"),
        "pools[0].gpu.type", "must match", "(got 'A100')"),
    # Memory and CPU topology.
    bad("zero-memory", pool("a100", "nodes: 1, cpus: 8, memory_mb: 0"),
        "pools[0].memory_mb", "at least 1", "(got 0)"),
    bad("negative-memory", pool("a100", "nodes: 1, cpus: 8, memory_mb: -512"),
        "pools[0].memory_mb", "at least 1", "(got -512)"),
    bad("zero-cpus", pool("a100", "nodes: 1, cpus: 0, memory_mb: 64000"),
        "pools[0].cpus", "at least 1", "(got 0)"),
    bad("negative-cpus", pool("a100", "nodes: 1, cpus: -8, memory_mb: 64000"),
        "pools[0].cpus", "at least 1", "(got -8)"),
    bad("cpus-disagree-with-topology",
        pool("a100", "nodes: 1, cpus: 30, sockets: 2, cores_per_socket: 16, "
             "memory_mb: 64000"),
        "pools[0]", "cpus 30 disagrees", "= 32"),
    bad("cpus-do-not-split-over-sockets",
        pool("a100", "nodes: 1, cpus: 9, sockets: 2, memory_mb: 64000"),
        "pools[0]", "cpus 9 does not split evenly over 2 sockets"),
    bad("cpus-do-not-split-over-threads",
        pool("a100", "nodes: 1, cpus: 6, threads_per_core: 4, memory_mb: 64000"),
        "pools[0]", "cpus 6 does not split evenly", "4 threads per core"),
    bad("zero-threads-per-core",
        pool("a100", "nodes: 1, cpus: 8, threads_per_core: 0, memory_mb: 64000"),
        "pools[0].threads_per_core", "at least 1", "(got 0)"),
    bad("zero-sockets",
        pool("a100", "nodes: 1, sockets: 0, cores_per_socket: 4, memory_mb: 64000"),
        "pools[0].sockets", "at least 1", "(got 0)"),
    bad("zero-cores-per-socket",
        pool("a100", "nodes: 1, cpus: 8, cores_per_socket: 0, memory_mb: 64000"),
        "pools[0].cores_per_socket", "at least 1", "(got 0)"),
    bad("no-cpu-topology", pool("a100", "nodes: 1, sockets: 2, memory_mb: 64000"),
        "pools[0]", "give cpus, or sockets and cores_per_socket"),
    bad("zero-nodes", pool("a100", "nodes: 0, cpus: 8, memory_mb: 64000"),
        "pools[0].nodes", "at least 1", "(got 0)"),
    bad("feature-with-a-space",
        pool("a100", "nodes: 1, cpus: 8, memory_mb: 64000, "
             "features: [a100, 'has space']"),
        "pools[0].features[1]", "must match", "(got 'has space')"),
    # Partitions.
    bad("partition-of-no-such-pool",
        spec(partitions="{name: gpu, pools: [a100, h100]}"),
        "partitions[0].pools[1]", "no pool named 'h100'", "(pools: a100)"),
    bad("two-default-partitions",
        spec(partitions="{name: gpu, pools: [a100], default: true}, "
             "{name: big, pools: [a100], default: true}"),
        "partitions", "2 are default (gpu, big)", "at most one"),
    bad("duplicate-partition-name",
        spec(partitions=f"{GPU_PARTITION}, {GPU_PARTITION}"),
        "partitions[1].name", "duplicate partition name 'gpu'"),
    bad("no-pools", spec(pools=""), "pools", "at least 1 item"),
    bad("no-partitions", spec(partitions=""), "partitions", "at least 1 item"),
    bad("partition-without-pools", spec(partitions="{name: gpu, pools: []}"),
        "partitions[0].pools", "at least 1 item"),
    bad("max-time-in-hours",
        spec(partitions="{name: gpu, pools: [a100], max_time: 4h}"),
        "partitions[0].max_time", "must match", "(got '4h')"),
    # YAML 1.1 reads an unquoted 4:00:00 as the number 14400.
    bad("max-time-unquoted",
        spec(partitions="{name: gpu, pools: [a100], max_time: 4:00:00}"),
        "partitions[0].max_time", "quote it", "(got 14400)"),
    bad("default-time-bad",
        spec(partitions="{name: gpu, pools: [a100], default_time: soon}"),
        "partitions[0].default_time", "must match", "(got 'soon')"),
    bad("oversubscribe-unknown",
        spec(partitions="{name: gpu, pools: [a100], oversubscribe: MAYBE}"),
        "partitions[0].oversubscribe", "'NO', 'YES', 'FORCE' or 'EXCLUSIVE'",
        "(got 'MAYBE')"),
    # ... and an unquoted NO as false.
    bad("oversubscribe-unquoted-no",
        spec(partitions="{name: gpu, pools: [a100], oversubscribe: NO}"),
        "partitions[0].oversubscribe", "quote it", "(got False)"),
    # Scheduler and containers.
    bad("def-mem-per-cpu-beyond-a-pool",
        spec(top="scheduler: {def_mem_per_cpu_mb: 8192}\n"),
        "scheduler.def_mem_per_cpu_mb", "8192", "pool 'a100'", "(4000)"),
    bad("zero-nodes-per-container",
        spec(top="containers: {nodes_per_container: 0}\n"),
        "containers.nodes_per_container", "'auto' or 1 to 256", "(got 0)"),
    bad("too-many-nodes-per-container",
        spec(top="containers: {nodes_per_container: 257}\n"),
        "containers.nodes_per_container", "'auto' or 1 to 256", "(got 257)"),
    bad("nodes-per-container-word",
        spec(top="containers: {nodes_per_container: many}\n"),
        "containers.nodes_per_container", "(got 'many')"),
    # The YAML itself.
    bad("duplicate-top-key", "name: t\nname: u\n",
        "line 2", "key 'name' appears twice"),
    bad("duplicate-pool-key",
        "name: t\npools:\n  - name: a100\n    nodes: 1\n    cpus: 8\n    nodes: 2\n",
        "line 6", "key 'nodes' appears twice"),
    bad("invalid-yaml", "name: t\npools: [\n", "line 3", "invalid YAML"),
    bad("invalid-yaml-indent", "name: t\n  pools: x\n", "line 2", "invalid YAML"),
    bad("unhashable-key", "name: t\n[a, b]: 1\n", "line 2", "unhashable key"),
    bad("control-character", spec() + "\x07", None,
        "invalid YAML", "special characters are not allowed"),
    bad("a-list", "- name: t\n- pools: []\n", None, "mapping", "got list"),
    bad("a-scalar", "just words\n", None, "mapping", "got str"),
    bad("empty-file", "", None, "mapping"),
    # Topology: sockets, cores, GPU affinity and links.
    bad("more-sockets-than-cpus", pool("a100", "nodes: 1, cpus: 2, sockets: 4, "
                                       "memory_mb: 64000"),
        "pools[0]", "4 sockets are more than the 2 CPUs"),
    bad("zero-threads", pool("a100", "nodes: 1, sockets: 2, cores_per_socket: 8, "
                                     "threads_per_core: 0, memory_mb: 64000"),
        "pools[0].threads_per_core", "at least 1", "got 0"),
    bad("affinity-beyond-the-cores",
        pool("a100", "nodes: 1, sockets: 2, cores_per_socket: 8, memory_mb: 64000, "
                     "gpu: {type: a100, count: 2, cores: ['0-7', '8-16']}"),
        "pools[0]", "gpu.cores[1] '8-16' names core 16", "cores 0-15"),
    bad("affinity-not-one-per-gpu",
        pool("a100", "nodes: 1, cpus: 16, memory_mb: 64000, "
                     "gpu: {type: a100, count: 2, cores: ['0-7']}"),
        "pools[0].gpu", "cores has 1 entries for 2 GPUs"),
    bad("affinity-not-a-range",
        pool("a100", "nodes: 1, cpus: 16, memory_mb: 64000, "
                     "gpu: {type: a100, count: 1, cores: ['socket0']}"),
        "pools[0].gpu.cores[0]", "must match", "'socket0'"),
    bad("links-not-square",
        pool("a100", "nodes: 1, cpus: 16, memory_mb: 64000, "
                     "gpu: {type: a100, count: 2, links: [[-1, 1], [1]]}"),
        "pools[0].gpu", "links[1] has 1 numbers"),
    bad("links-self-not-minus-one",
        pool("a100", "nodes: 1, cpus: 16, memory_mb: 64000, "
                     "gpu: {type: a100, count: 2, links: [[0, 1], [1, -1]]}"),
        "pools[0].gpu", "links[0] must be -1 for GPU 0 itself"),
    bad("links-asymmetric",
        pool("a100", "nodes: 1, cpus: 16, memory_mb: 64000, "
                     "gpu: {type: a100, count: 2, links: [[-1, 2], [1, -1]]}"),
        "pools[0].gpu", "counts the same both ways"),
    bad("mem-per-gpu-beyond-the-node",
        spec(pools="{name: a100, nodes: 1, cpus: 16, memory_mb: 64000, "
                   "gpu: {type: a100, count: 2}}",
             partitions="{name: gpu, pools: [a100], def_mem_per_gpu_mb: 40000}"),
        "partitions[0].def_mem_per_gpu_mb", "40000 x", "memory_mb"),
]


@pytest.mark.parametrize(("text", "field", "fragments"), BAD_SPECS)
def test_bad_spec_is_refused_in_one_line(
    tmp_path: Path, text: str, field: str | None, fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)

    message = refusal(path)

    assert message.startswith(f"{path}: {field}: " if field else f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    message = refusal(path)

    assert message == f"{path}: cannot read: No such file or directory"


def test_folder_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path)

    assert message.startswith(f"{tmp_path}: cannot read:"), message


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))

    message = refusal(path)

    assert message.startswith(f"{path}: not UTF-8"), message
    assert "0xe9" in message


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads(preset: Path) -> None:
    fleet = load_fleet(preset)

    assert fleet.name == preset.stem
    assert fleet.nodes()
    assert sum(p.default for p in fleet.partitions) == 1


def test_node_names_count_from_one(tmp_path: Path) -> None:
    fleet = load(tmp_path, spec())

    assert [n.name for n in fleet.nodes()] == ["a100-1", "a100-2"]


@pytest.mark.parametrize(
    ("nodes", "first", "last"),
    [(9, "a100-1", "a100-9"), (10, "a100-01", "a100-10"),
     (100, "a100-001", "a100-100")],
)
def test_node_names_are_zero_padded_to_the_pool_size(
    tmp_path: Path, nodes: int, first: str, last: str
) -> None:
    fleet = load(tmp_path, pool("a100", f"nodes: {nodes}, cpus: 8, memory_mb: 64000"))

    names = [n.name for n in fleet.nodes()]

    assert (names[0], names[-1], len(set(names))) == (first, last, nodes)


def test_node_names_are_the_same_on_every_load(tmp_path: Path) -> None:
    text = spec(pools="{name: a100, nodes: 12, cpus: 8, memory_mb: 64000}, "
                "{name: cpu, nodes: 3, cpus: 8, memory_mb: 64000, node_prefix: c}",
                partitions="{name: gpu, pools: [a100, cpu]}")

    first = [n.name for n in load(tmp_path, text).nodes()]
    again = [n.name for n in load(tmp_path, text).nodes()]

    assert first == again
    assert first[0] == "a100-01" and first[-3:] == ["c1", "c2", "c3"]


@pytest.mark.parametrize(
    ("topology", "sockets", "cores_per_socket"),
    [
        ("cpus: 16", 2, 8),
        ("cpus: 7", 1, 7),
        ("cpus: 16, threads_per_core: 2", 2, 4),
        ("cpus: 24, sockets: 4", 4, 6),
        ("cpus: 12, cores_per_socket: 6", 2, 6),
        ("sockets: 2, cores_per_socket: 10", 2, 10),
    ],
)
def test_cpus_shorthand_fills_sockets_and_cores(
    tmp_path: Path, topology: str, sockets: int, cores_per_socket: int
) -> None:
    fleet = load(tmp_path, pool("a100", f"nodes: 1, {topology}, memory_mb: 64000"))

    a100 = fleet.pools[0]

    assert (a100.sockets, a100.cores_per_socket) == (sockets, cores_per_socket)
    assert a100.cpus == sockets * cores_per_socket * a100.threads_per_core


def test_pool_named_after_a_service_gets_numbered_nodes(tmp_path: Path) -> None:
    # Node names always end in a number and no service name does, so a pool
    # called `login` (even with node_prefix `login`) cannot take the service.
    text = pool("login", "nodes: 1, cpus: 8, memory_mb: 64000, node_prefix: login")
    fleet = load(tmp_path, text)

    names = [n.name for n in fleet.nodes()] + [h.name for h in fleet.hosts()]

    assert names == ["login1", "login1"]
    assert not set(names) & RESERVED_NAMES


@pytest.mark.parametrize("preset", ["default", "minimal"])
def test_small_fleet_has_one_container_per_node(preset: str) -> None:
    fleet = load_fleet(FLEETS / f"{preset}.yaml")

    hosts = fleet.hosts()

    assert [h.nodes for h in hosts] == [(n.name,) for n in fleet.nodes()]
    assert all(h.nodes == (h.name,) for h in hosts)


def test_large_fleet_packs_nodes_into_containers() -> None:
    fleet = load_fleet(FLEETS / "large.yaml")
    assert fleet.containers.nodes_per_container == "auto"

    hosts = fleet.hosts()
    served = [node for host in hosts for node in host.nodes]

    assert sorted(served) == sorted(n.name for n in fleet.nodes())
    assert len(served) == len(set(served))
    assert all(len(h.nodes) <= AUTO_NODES_PER_CONTAINER for h in hosts)
    assert max(len(h.nodes) for h in hosts) == AUTO_NODES_PER_CONTAINER
    assert all(set(h.nodes) <= set(h.pool.node_names()) for h in hosts)


def test_nodes_per_container_packs_a_small_fleet(tmp_path: Path) -> None:
    fleet = load(tmp_path, pool("a100", "nodes: 10, cpus: 8, memory_mb: 64000")
                 + "containers: {nodes_per_container: 4}\n")

    hosts = fleet.hosts()

    assert [h.name for h in hosts] == ["a100-host1", "a100-host2", "a100-host3"]
    assert [len(h.nodes) for h in hosts] == [4, 4, 2]


def test_explicit_affinity_and_links_reach_gres_conf(tmp_path: Path) -> None:
    from sim.render import render_fleet

    fleet = load(tmp_path, pool(
        "a100", "nodes: 1, sockets: 2, cores_per_socket: 8, memory_mb: 64000, "
        "gpu: {type: a100, count: 2, cores: ['0-3,8-11', '4-7'], "
        "links: [[-1, 4], [4, -1]]}"))
    gres = render_fleet(fleet)["gres.conf"]
    assert "nvidia0 Cores=0-3,8-11 Links=-1,4\n" in gres
    assert "nvidia1 Cores=4-7 Links=4,-1\n" in gres
