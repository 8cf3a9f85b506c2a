"""Submission rate: the kit's submit path against two ways of calling sbatch.

    .venv/bin/python bench/submit.py [--jobs 1000]

With the default cluster up, it submits held jobs (they never run) three
ways, cancels them after each, and prints jobs per second:
  kit       Slurm.submit_many through the Docker API, one round trip
  exec loop one `docker exec login sbatch` process per job
  inside    a shell loop of sbatch inside the login container
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import common

from sim.cluster import DockerCluster, SessionTransport
from sim.slurm import Slurm

SCRIPT = "#!/bin/bash\ntrue\n"
OPTIONS = ["--hold", "--job-name=bench-submit"]


def cancel(slurm: Slurm) -> None:
    slurm.transport.run(["scancel", "--name=bench-submit"])


def kit(slurm: Slurm, jobs: int) -> float:
    began = time.monotonic()
    ids = slurm.submit_many([(OPTIONS, SCRIPT)] * jobs, user="alice")
    elapsed = time.monotonic() - began
    assert all(isinstance(i, int) for i in ids), ids[:3]
    return elapsed


def exec_loop(container: str, jobs: int) -> float:
    began = time.monotonic()
    for _ in range(jobs):
        subprocess.run(["docker", "exec", "-u", "alice", "-w", "/home/alice", container,
                        "sbatch", *OPTIONS, "--wrap", "true"], check=True,
                       capture_output=True)
    return time.monotonic() - began


def inside(slurm: Slurm, jobs: int) -> float:
    loop = (f'start=$(date +%s%N); for i in $(seq {jobs}); do '
            f'sbatch {" ".join(OPTIONS)} --wrap true >/dev/null || exit 1; done; '
            'echo $(( $(date +%s%N) - start ))')
    result = slurm.transport.run(["bash", "-c", loop], user="alice",
                                 timeout_s=60 + jobs).check()
    return int(result.stdout.strip()) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--exec-jobs", type=int, default=200,
                        help="jobs for the docker-exec loop (it is slow)")
    args = parser.parse_args()
    cluster = DockerCluster()
    slurm = Slurm(SessionTransport(cluster))
    container = cluster.service("login").name
    print(f"machine: {common.machine()}")
    rows = []
    for name, jobs, run in (
            ("kit", args.jobs, lambda n: kit(slurm, n)),
            ("exec loop", args.exec_jobs, lambda n: exec_loop(container, n)),
            ("inside", args.jobs, lambda n: inside(slurm, n))):
        cancel(slurm)
        seconds = run(jobs)
        cancel(slurm)
        rows.append((name, jobs, seconds, jobs / seconds))
    rates = {name: rate for name, _, _, rate in rows}
    print(f"{'path':<10} {'jobs':>6} {'seconds':>8} {'jobs/s':>8}")
    for name, jobs, seconds, rate in rows:
        print(f"{name:<10} {jobs:>6} {seconds:>8.1f} {rate:>8.1f}")
    print(f"kit / exec loop: {rates['kit'] / rates['exec loop']:.1f}x (target 10x); "
          f"kit / inside: {rates['kit'] / rates['inside']:.2f}x (target 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
