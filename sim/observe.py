"""Observations: what Slurm reported about each job over a scenario's run.

An `Observer` polls `squeue --json` on a background thread at a short
interval and folds every report into a `JobHistory` per job: the states and
pending reasons it went through, the GPUs it held while running (Slurm
forgets them when a job ends) and how often it started. Waits poll it
directly, so a condition is seen as soon as Slurm reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sim.errors import SimError
from sim.slurm import GpuAllocation, Job, ShardAllocation, Slurm

log = logging.getLogger(__name__)

ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "CONFIGURING",
        "SUSPENDED",
        "REQUEUED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
    }
)


@dataclass
class JobHistory:
    """Everything seen of one Slurm job (one task, for arrays)."""

    job_id: int
    latest: Job
    states: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    gpus: tuple[GpuAllocation, ...] = ()
    shards: tuple[ShardAllocation, ...] = ()
    cores: tuple[tuple[str, int, int], ...] = ()
    nodes: tuple[str, ...] = ()
    starts: int = 0
    # When the kit first saw it running, by the kit's clock, for lag figures.
    seen_running_at: float | None = None

    def update(self, job: Job, now: float) -> None:
        if not self.states or self.states[-1] != job.state:
            if job.state == "RUNNING":
                self.starts += 1
                if self.seen_running_at is None:
                    self.seen_running_at = now
            self.states.append(job.state)
        if job.state == "PENDING" and job.reason not in (*self.reasons, "None"):
            self.reasons.append(job.reason)
        if job.state == "RUNNING" and job.gpus:
            self.gpus = job.gpus
        if job.state == "RUNNING" and job.shards:
            self.shards = job.shards
        if job.state == "RUNNING" and job.cores:
            self.cores = job.cores
        if job.nodes:
            self.nodes = job.nodes
        self.latest = job

    @property
    def requeued(self) -> bool:
        return self.starts > 1 or self.latest.restart_count > 0

    @property
    def start_time(self) -> datetime | None:
        return self.latest.start_time

    @property
    def end_time(self) -> datetime | None:
        return self.latest.end_time


class Observer:
    def __init__(
        self,
        slurm: Slurm,
        *,
        interval_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        watched: set[int] | None = None,
    ):
        self.slurm = slurm
        self.interval_s = interval_s
        self.clock = clock
        self.histories: dict[int, JobHistory] = {}
        # The jobs to watch (an array by its id); None watches every job.
        self.watched: set[int] | None = watched
        self.polls = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, job_id: int) -> None:
        """Watch only the jobs named so (a smaller answer from Slurm each poll)."""
        with self._lock:
            self.watched = (self.watched or set()) | {job_id}

    def poll(self) -> list[Job]:
        """Ask Slurm now; returns the jobs it reported (empty while it is away)."""
        with self._lock:
            watched = None if self.watched is None else sorted(self.watched)
        if watched == []:
            return []
        try:
            jobs = self.slurm.jobs(watched)
        except SimError as exc:
            # The controller may be restarting on purpose: keep what was seen.
            self.last_error = str(exc)
            return []
        now = self.clock()
        with self._lock:
            self.last_error = None
            self.polls += 1
            for job in jobs:
                history = self.histories.get(job.job_id)
                if history is None:
                    history = self.histories[job.job_id] = JobHistory(job.job_id, job)
                history.update(job, now)
        return jobs

    def history(self, job_id: int) -> JobHistory | None:
        with self._lock:
            return self.histories.get(job_id)

    def tasks_of(self, array_job_id: int) -> list[JobHistory]:
        with self._lock:
            return sorted(
                (
                    h
                    for h in self.histories.values()
                    if h.latest.array_job_id == array_job_id
                ),
                key=lambda h: h.latest.array_task_id or 0,
            )

    def __enter__(self) -> Observer:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)
