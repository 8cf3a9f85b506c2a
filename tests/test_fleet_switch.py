"""Switching fleets: one command, and Slurm then reports the new fleet."""

from __future__ import annotations

from sim import paths
from sim.cli import presets, use_fleet
from sim.cluster import DockerCluster, ExecTransport
from sim.fleet import load_fleet
from sim.slurm import Slurm


def fleet_as_slurm_sees_it(slurm: Slurm) -> dict[str, tuple]:
    return {n.name: (n.gpus, n.partitions, n.cpus) for n in slurm.nodes()}


def fleet_as_spec_says(name: str) -> dict[str, tuple]:
    fleet = load_fleet(presets()[name])
    return {
        n.name: ({n.pool.gpu.type: n.pool.gpu.count} if n.pool.gpu else {},
                 tuple(fleet.partitions_of(n.pool)), n.pool.cpus)
        for n in fleet.nodes()
    }


def test_switching_fleets_reshapes_the_cluster(cluster: DockerCluster) -> None:
    env_file = paths.PROJECT / ".env"
    saved = env_file.read_text() if env_file.exists() else None
    slurm = Slurm(ExecTransport(cluster))
    try:
        use_fleet(load_fleet(presets()["minimal"]), restart=True)
        assert fleet_as_slurm_sees_it(slurm) == fleet_as_spec_says("minimal")
    finally:
        use_fleet(load_fleet(presets()["default"]), restart=True)
        if saved is None:
            env_file.unlink(missing_ok=True)
        else:
            env_file.write_text(saved)
    assert fleet_as_slurm_sees_it(slurm) == fleet_as_spec_says("default")
