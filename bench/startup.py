"""Fleet start-up: from `docker compose up` (images built) to every node idle.

    .venv/bin/python bench/startup.py                 # default fleet, 8, 64, 256, 1024
    .venv/bin/python bench/startup.py --nodes 8 256   # chosen sizes only

For each fleet it renders a spec (N nodes of 8 GPUs, or the default preset),
brings a separate compose project up with `up -d --wait`, which returns when
every node is in service in sinfo, checks with sinfo that all N are idle,
measures the memory of the node containers, and takes the project down.
It prints a table with the machine it ran on. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import common

from sim import paths
from sim.cluster import DockerCluster, ExecTransport
from sim.fleet import Fleet, load_fleet
from sim.render import render_fleet, write_rendering
from sim.slurm import Slurm

PROJECT = "gpusim-bench"


def synthetic_fleet(nodes: int) -> Fleet:
    """N nodes of 8 GPUs: two-socket servers, one GPU partition.

    slurmctld pings every node that has been quiet for a third of
    SlurmdTimeout; the fleets' 10 s would be hundreds of pings a second at
    1,024 nodes, so beyond 256 nodes the spec gives Slurm a longer one.
    """
    return Fleet.model_validate({
        "scheduler": {"slurmd_timeout_s": 10 if nodes <= 256 else 120},
        "name": f"bench-{nodes}",
        "description": f"{nodes} nodes of 8 GPUs",
        "pools": [{"name": "gpu", "nodes": nodes, "gpu": {"type": "h100", "count": 8},
                   "sockets": 2, "cores_per_socket": 32, "memory_mb": 1024000}],
        "partitions": [{"name": "gpu", "pools": ["gpu"], "default": True}],
    })


def memory_mb(container) -> float:  # noqa: ANN001 - a docker Container
    stats = container.stats(stream=False)["memory_stats"]
    cache = stats.get("stats", {}).get("cache", 0)
    return (stats.get("usage", 0) - cache) / 2**20


def measure(fleet: Fleet, timeout_s: float) -> dict[str, float]:
    rendering = paths.STATE / "bench" / fleet.name
    write_rendering(render_fleet(fleet), rendering)
    os.environ["SIM_CLUSTER_DIR"] = f"./{rendering.relative_to(paths.PROJECT)}"
    cluster = DockerCluster(project=PROJECT)
    cluster.down(volumes=True)
    began = time.monotonic()
    try:
        cluster.up(build=False, timeout_s=timeout_s)
        up_s = time.monotonic() - began
        slurm = Slurm(ExecTransport(cluster))
        idle = sum(n.state == ("IDLE",) for n in slurm.nodes())
        nodes = [c for c in cluster.containers("node")]
        node_mb = sum(memory_mb(c) for c in nodes)
        total_mb = node_mb + sum(memory_mb(c) for c in cluster.containers()
                                 if c.labels.get("sim.role") not in ("node", "keygen")
                                 and c.status == "running")
    finally:
        cluster.down(volumes=True)
    count = len(fleet.nodes())
    return {"nodes": count, "gpus": sum(p.gpus * p.nodes for p in fleet.pools),
            "containers": len(nodes), "idle": idle, "up_s": up_s,
            "mb_per_node": node_mb / count, "nodes_per_gib": count / (node_mb / 1024),
            "total_gib": total_mb / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[8, 64, 256, 1024])
    parser.add_argument("--no-default", action="store_true",
                        help="skip the default preset")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    fleets = [] if args.no_default else [load_fleet(paths.DEFAULT_FLEET)]
    fleets += [synthetic_fleet(n) for n in args.nodes]
    print(f"machine: {common.machine()}")
    print(f"{'fleet':<12} {'nodes':>6} {'GPUs':>6} {'containers':>10} {'idle':>6} "
          f"{'up -> idle':>11} {'MiB/node':>9} {'nodes/GiB':>10} {'cluster GiB':>12}",
          flush=True)
    for fleet in fleets:
        row = measure(fleet, args.timeout)
        print(f"{fleet.name:<12} {row['nodes']:>6} {row['gpus']:>6} "
              f"{row['containers']:>10} {row['idle']:>6} {row['up_s']:>10.1f}s "
              f"{row['mb_per_node']:>9.1f} {row['nodes_per_gib']:>10.0f} "
              f"{row['total_gib']:>12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
