"""Observation lag: when the kit reports a job started, against Slurm's record.

    .venv/bin/python bench/lag.py [--jobs 48] [--poll 0.25]

With the default cluster up, it submits a burst of one-GPU jobs in waves
that the fleet's GPUs can hold, lets the kit's Observer poll squeue, and
compares the moment the kit first saw each job running with the moment
slurmctld logged starting it (its log has milliseconds; squeue's start
time has whole seconds only). Prints the median and 95th percentile.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from datetime import datetime

import common

from sim.cluster import DockerCluster, SessionTransport, wait_until
from sim.observe import Observer
from sim.slurm import Slurm

STARTED = re.compile(
    r"^\[(?P<at>[\d\-T:.]+)\] (?:sched/backfill: _start_job: Started "
    r"JobId=(?P<a>\d+)|sched: Allocate JobId=(?P<b>\d+))"
)


def slurm_start_times(cluster: DockerCluster, ids: set[int]) -> dict[int, float]:
    log = cluster.exec(
        "slurmctld",
        ["grep", "-E", "Started JobId|Allocate JobId", "/var/log/slurm/slurmctld.log"],
    ).stdout
    found = {}
    for line in log.splitlines():
        match = STARTED.match(line)
        if not match:
            continue
        job = int(match["a"] or match["b"].split("(")[0])
        if job in ids and job not in found:
            at = datetime.fromisoformat(match["at"]).astimezone()
            found[job] = at.timestamp()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--poll", type=float, default=0.25)
    args = parser.parse_args()
    cluster = DockerCluster()
    slurm = Slurm(SessionTransport(cluster))
    print(f"machine: {common.machine()}")
    script = "#!/bin/bash\nsleep 3\n"
    ids: list[int] = []
    with Observer(slurm, interval_s=args.poll, watched=set()) as observer:
        # Waves of jobs the fleet's 16 GPUs can hold at once: submitted held,
        # watched, then released together, so each wave starts as a burst.
        for wave in range(0, args.jobs, 16):
            burst = [(["--hold", "--gres=gpu:1", "--job-name=bench-lag"], script)]
            held = slurm.submit_many(burst * min(16, args.jobs - wave), user="alice")
            for job_id in held:
                observer.watch(job_id)
            slurm.transport.run(
                ["scontrol", "release", ",".join(map(str, held))], user="alice"
            ).check()
            wait_until(
                lambda held=held: all(
                    (h := observer.history(i)) and h.seen_running_at for i in held
                ),
                what="the wave seen running",
                timeout_s=120,
                interval_s=0.2,
            )
            wait_until(
                lambda held=held: all(
                    observer.history(i).latest.state == "COMPLETED" for i in held
                ),
                what="the wave ended",
                timeout_s=120,
                interval_s=0.5,
            )
            ids += held
    started = slurm_start_times(cluster, set(ids))
    lags = [
        observer.history(i).seen_running_at - started[i] for i in ids if i in started
    ]
    slurm.transport.run(["scancel", "--name=bench-lag"])
    print(
        f"jobs {len(lags)}, poll interval {args.poll}s: lag median "
        f"{statistics.median(lags):.3f}s, p95 {common.percentile(lags, 0.95):.3f}s, "
        f"max {max(lags):.3f}s (target: median <= 0.2s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
