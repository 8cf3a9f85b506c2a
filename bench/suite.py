"""Suite time: the default scenarios' wall time against Slurm's own waits.

    .venv/bin/python bench/suite.py

With the default cluster up, it runs the default scenario library and
compares, per scenario, the kit's wall time with the span Slurm itself
needed: from the first job's submission to the last start or end Slurm
recorded (its scheduler intervals, the job durations, node-failure
detection and requeue delays). The difference is the kit's overhead:
resetting the cluster, observing, reading job records. Prints a table.
This is a benchmark, not a test.
"""

from __future__ import annotations

import sys
from datetime import datetime

import common

from sim.cli import load_scenarios
from sim.cluster import DockerCluster, SessionTransport
from sim.runner import Runner, ScenarioResult
from sim.slurm import Slurm


def slurm_span_s(result: ScenarioResult) -> float:
    """From the first submission to the last start or end Slurm recorded."""
    stamps = [datetime.fromisoformat(t) for job in result.jobs
              for t in (job.submit_time, job.start_time, job.end_time) if t]
    if not stamps:
        return 0.0
    return (max(stamps) - min(stamps)).total_seconds()


def main() -> int:
    cluster = DockerCluster()
    slurm = Slurm(SessionTransport(cluster))
    runner = Runner(slurm, cluster, fleet=cluster.fleet())
    print(f"machine: {common.machine()}")
    print(f"{'scenario':<28} {'status':<8} {'wall s':>7} {'Slurm s':>8}")
    walls, spans = 0.0, 0.0
    for scenario in load_scenarios([]):
        result = runner.run(scenario)
        span = slurm_span_s(result)
        walls += result.duration_s
        spans += span
        print(f"{scenario.name:<28} {result.status:<8} {result.duration_s:>7.1f} "
              f"{span:>8.1f}", flush=True)
        for failed in (e for e in result.expectations if not e.passed):
            print(f"    failed: {failed.text}: observed {failed.observed}")
    runner.clean_up()
    print(f"{'all':<28} {'':<8} {walls:>7.1f} {spans:>8.1f}  ratio {walls / spans:.2f} "
          "(target <= 1.5; Slurm's times have whole seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
