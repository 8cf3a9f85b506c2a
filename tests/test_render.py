"""Rendering: every preset against its golden files, and what the files promise.

After a deliberate change to the templates or the presets, regenerate the
golden files and review them with git diff:

    SIM_UPDATE_GOLDEN=1 python3 -m pytest tests/test_render.py
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from sim.fleet import Fleet, load_fleet
from sim.hostlist import compress
from sim.render import GPU_MAJOR, render_fleet, write_rendering

PROJECT = Path(__file__).resolve().parents[1]
FLEETS = PROJECT / "slurm-conf" / "fleets"
TEMPLATES = PROJECT / "slurm-conf" / "templates"
COMMITTED = PROJECT / "slurm-conf" / "rendered"
GOLDEN = Path(__file__).resolve().parent / "golden"
PRESETS = sorted(p.stem for p in FLEETS.glob("*.yaml"))
UPDATE = os.environ.get("SIM_UPDATE_GOLDEN") == "1"
REGENERATE = "SIM_UPDATE_GOLDEN=1 python3 -m pytest tests/test_render.py"


def fleet_of(preset: str) -> Fleet:
    return load_fleet(FLEETS / f"{preset}.yaml")


def render(preset: str) -> dict[str, str]:
    return render_fleet(fleet_of(preset), TEMPLATES)


def read_tree(folder: Path) -> dict[str, str]:
    """Every file under `folder`, as relative POSIX path -> text."""
    return {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_tree(files: dict[str, str], folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def differences(expected: dict[str, str], actual: dict[str, str],
                where: str) -> str:
    """A readable account of how `actual` differs from the files in `where`."""
    problems = [f"missing from {where}: {name}"
                for name in sorted(actual.keys() - expected.keys())]
    problems += [f"stale in {where} (not rendered any more): {name}"
                 for name in sorted(expected.keys() - actual.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        if expected[name] != actual[name]:
            problems.append("".join(difflib.unified_diff(
                expected[name].splitlines(keepends=True),
                actual[name].splitlines(keepends=True),
                fromfile=f"{where}/{name}", tofile=f"rendered/{name}",
            )))
    return "\n".join(problems)


def key_values(line: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in line.split())


def conf_lines(text: str, first_key: str) -> list[dict[str, str]]:
    """The `Key=Value ...` lines of a Slurm config that start with `first_key`."""
    return [key_values(line) for line in text.splitlines()
            if line.startswith(f"{first_key}=")]


def manifest_nodes(text: str) -> dict[str, tuple[int, list[tuple[str, int, int]]]]:
    """A host manifest as node -> (port, [(device path, major, minor)])."""
    nodes: dict[str, tuple[int, list[tuple[str, int, int]]]] = {}
    node = ""
    for line in text.splitlines():
        word, *rest = line.split() or [""]
        if word == "node":
            node = rest[0]
            nodes[node] = (int(rest[1]), [])
        elif word == "device":
            nodes[node][1].append((rest[0], int(rest[1]), int(rest[2])))
    return nodes


@pytest.mark.parametrize("preset", PRESETS)
def test_rendering_matches_golden_files(preset: str) -> None:
    files = render(preset)
    folder = GOLDEN / preset

    if UPDATE:
        write_tree(files, folder)
        return
    golden = read_tree(folder)

    problems = differences(golden, files, f"tests/golden/{preset}")
    if problems:
        pytest.fail(f"fleet {preset!r} renders differently from its golden files; "
                    f"if the change is meant, regenerate them with `{REGENERATE}`"
                    f"\n{problems}", pytrace=False)


def test_golden_folders_are_the_presets() -> None:
    stale = sorted({p.name for p in GOLDEN.iterdir()} - set(PRESETS))

    if UPDATE:
        for name in stale:
            shutil.rmtree(GOLDEN / name)
        return

    assert not stale, f"golden folders of no preset: {stale}; run `{REGENERATE}`"


def test_committed_rendering_is_the_default_fleet() -> None:
    problems = differences(read_tree(COMMITTED), render("default"),
                           "slurm-conf/rendered")

    if problems:
        pytest.fail("slurm-conf/rendered (used by compose.yaml) is not the rendering "
                    "of slurm-conf/fleets/default.yaml; regenerate it with "
                    "`python3 -m sim render --fleet default --out slurm-conf/rendered`"
                    f"\n{problems}", pytrace=False)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a100-1"], "a100-1"),
        (["a100-1", "a100-2", "a100-3"], "a100-[1-3]"),
        (["a100-1", "a100-2", "a100-4", "a100-7", "a100-8"], "a100-[1-2,4,7-8]"),
        ([f"a100-{i:02d}" for i in range(1, 11)], "a100-[01-10]"),
        (["n-008", "n-009", "n-010", "n-012"], "n-[008-010,012]"),
        (["a100-1", "a100-2", "h100-1", "cpu-1"], "a100-[1-2],h100-1,cpu-1"),
        (["login", "mariadb"], "login,mariadb"),
        (["gpu", "gpu1", "gpu2"], "gpu,gpu[1-2]"),
        (["a9", "a10"], "a9,a10"),
        (["b-1", "a-1", "b-2"], "b-1,a-1,b-2"),
        ([], ""),
    ],
)
def test_hostlist_compresses_names(names: list[str], expected: str) -> None:
    assert compress(names) == expected


def test_write_rendering_replaces_the_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "cluster"
    write_tree({"slurm.conf": "old\n", "hosts/gone-1.manifest": "old\n"}, target)
    files = {"slurm.conf": "new\n", "hosts/a100-1.manifest": "node a100-1 6818\n"}

    inode = target.stat().st_ino

    write_rendering(files, target)

    assert read_tree(target) == files
    assert [p.name for p in tmp_path.iterdir()] == ["cluster"]
    # Containers bind-mount the folder: a new folder would be invisible to them.
    assert target.stat().st_ino == inode


def test_write_rendering_makes_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "state" / "cluster"

    write_rendering({"nodes.list": "a100-1\n"}, target)

    assert read_tree(target) == {"nodes.list": "a100-1\n"}


def test_failed_write_leaves_the_previous_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cluster"
    previous = {"slurm.conf": "old\n", "hosts/a100-1.manifest": "old\n"}
    write_tree(previous, target)
    real_write_text = Path.write_text
    calls = 0

    def write_text(self: Path, *args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError, match="No space left"):
        write_rendering({f"file{i}": "new\n" for i in range(5)}, target)
    monkeypatch.undo()

    assert calls == 3
    assert read_tree(target) == previous
    assert [p.name for p in tmp_path.iterdir()] == ["cluster"]


@pytest.mark.parametrize("preset", PRESETS)
def test_gres_names_one_device_per_gpu_near_its_cores(preset: str) -> None:
    fleet = fleet_of(preset)
    gres = conf_lines(render(preset)["gres.conf"], "NodeName")

    for node in fleet.nodes():
        lines = [g for g in gres if g["NodeName"] == node.name and g["Name"] == "gpu"]
        assert len(lines) == node.pool.gpus, node.name
        for line in lines:
            assert line["Type"] == node.pool.gpu.type
            first, last = map(int, line["Cores"].split("-"))
            assert 0 <= first <= last < node.pool.cores, line

    devices = [g["File"] for g in gres if g["Name"] == "gpu"]
    assert len(devices) == len(set(devices))
    assert len(devices) == sum(n.pool.gpus for n in fleet.nodes())


@pytest.mark.parametrize("preset", PRESETS)
def test_manifest_makes_the_devices_gres_names(preset: str) -> None:
    fleet = fleet_of(preset)
    files = render(preset)
    gres = conf_lines(files["gres.conf"], "NodeName")

    for host in fleet.hosts():
        nodes = manifest_nodes(files[f"hosts/{host.name}.manifest"])
        assert list(nodes) == list(host.nodes)
        for node, (_, devices) in nodes.items():
            paths = [path for path, _, _ in devices]
            minors = [minor for _, _, minor in devices]
            assert paths == [g["File"] for g in gres
                             if g["NodeName"] == node and g["Name"] == "gpu"]
            assert sorted(minors) == list(range(host.pool.gpus)), node
            assert {major for _, major, _ in devices} <= {GPU_MAJOR}


@pytest.mark.parametrize("preset", PRESETS)
def test_shards_are_shares_of_each_gpu_device(preset: str) -> None:
    fleet = fleet_of(preset)
    files = render(preset)
    gres = conf_lines(files["gres.conf"], "NodeName")
    nodes = {n["NodeName"]: n for n in conf_lines(files["slurm.conf"], "NodeName")}

    for node in fleet.nodes():
        shards = [g for g in gres
                  if g["NodeName"] == node.name and g["Name"] == "shard"]
        gpus = [g["File"] for g in gres if g["NodeName"] == node.name
                and g["Name"] == "gpu"]
        per_gpu = node.pool.gpu.shards_per_gpu if node.pool.gpu else None
        if not per_gpu:
            assert not shards and "shard" not in nodes[node.name].get("Gres", "")
            continue
        assert [s["File"] for s in shards] == gpus
        assert {s["Count"] for s in shards} == {str(per_gpu)}
        assert f"shard:{per_gpu * len(gpus)}" in nodes[node.name]["Gres"]
    (line,) = conf_lines(files["slurm.conf"], "GresTypes")
    types = line["GresTypes"]
    assert ("shard" in types.split(",")) == fleet.has_shards()


@pytest.mark.parametrize("preset", PRESETS)
def test_nodes_of_a_host_listen_on_distinct_ports(preset: str) -> None:
    fleet = fleet_of(preset)
    files = render(preset)
    nodes = {n["NodeName"]: n for n in conf_lines(files["slurm.conf"], "NodeName")}

    assert sorted(nodes) == sorted(n.name for n in fleet.nodes())
    for host in fleet.hosts():
        lines = [nodes[name] for name in host.nodes]
        ports = [line["Port"] for line in lines]
        assert len(set(ports)) == len(ports), host.name
        assert {(n["NodeHostname"], n["NodeAddr"]) for n in lines} == {
            (host.name, host.name)
        }
        manifest = manifest_nodes(files[f"hosts/{host.name}.manifest"])
        assert [str(port) for port, _ in manifest.values()] == ports


def test_partition_lines_name_their_pools_nodes() -> None:
    fleet = fleet_of("default")
    partitions = conf_lines(render("default")["slurm.conf"], "PartitionName")

    by_name = {p["PartitionName"]: p for p in partitions}

    assert by_name["gpu"]["Nodes"] == "a100-[1-2],h100-1"
    assert by_name["gpu"]["Default"] == "YES"
    assert by_name["cpu"]["Nodes"] == "cpu-1"
    assert "Default" not in by_name["cpu"]
    assert len(partitions) == len(fleet.partitions)

