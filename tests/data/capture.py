"""Captures the Slurm JSON that the offline tests parse, from a running cluster.

    python3 tests/data/capture.py      # cluster up on the default fleet, queue empty

It writes tests/data/slurm-<version>/: an empty queue, a busy queue with an
array and a pending job, and a requeued job with its node down after a kill.
The cluster is left with every node back in service.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sim.cluster import DockerCluster, ExecTransport, wait_until
from sim.slurm import Slurm, parse_jobs, parse_nodes

HOLD = "#!/bin/bash\nsleep 300\n"


def dump(slurm: Slurm, folder: Path, name: str, argv: list[str]) -> dict:
    text = slurm.transport.run(argv).check().stdout
    (folder / f"{name}.json").write_text(text)
    return json.loads(text)


def main() -> int:
    cluster = DockerCluster()
    slurm = Slurm(ExecTransport(cluster))
    folder = Path(__file__).parent / f"slurm-{'.'.join(slurm.version().split('.')[:2])}"
    folder.mkdir(exist_ok=True)
    squeue = ["squeue", "--all", "--states=all", "--json"]
    nodes = ["scontrol", "show", "node", "--json"]
    if [j for j in slurm.jobs()]:
        print("capture.py wants a cluster whose controller knows no job "
              "(docker compose down -v; docker compose up -d --wait)", file=sys.stderr)
        return 1
    dump(slurm, folder, "squeue-empty", squeue)
    dump(slurm, folder, "node-idle", nodes)

    victim = slurm.submit(["--gres=gpu:a100:4", "--nodelist=a100-2"], HOLD, user="bob")
    wait_until(lambda: slurm.job(victim)[0].state == "RUNNING", what="victim running",
               timeout_s=60)
    cluster.kill_node("a100-2")
    wait_until(lambda: any(n.name == "a100-2" and n.base_state == "DOWN"
                           for n in slurm.nodes()), what="a100-2 down", timeout_s=90)
    time.sleep(1)
    jobs = parse_jobs(dump(slurm, folder, "squeue-requeued", squeue))
    down = parse_nodes(dump(slurm, folder, "node-down", nodes))
    dump(slurm, folder, "sacct-requeued", ["sacct", "--json", "-j", str(victim)])
    cluster.start_node("a100-2")
    slurm.cancel(victim)
    print(f"captured into {folder}: {len(jobs)} jobs, "
          f"{sum(n.base_state == 'DOWN' for n in down)} node down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
