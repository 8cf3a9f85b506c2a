"""The Slurm client offline: JSON captured from Slurm 24.11, parsed into records.

The files under tests/data/slurm-24.11 are Slurm's own output on the default
fleet (see tests/data/capture.py). `Slurm` itself runs here over a fake
transport that replays them and records the commands it was given.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sim.errors import CommandError
from sim.hostlist import compress, expand
from sim.slurm import (
    CommandResult,
    GpuAllocation,
    Job,
    LocalTransport,
    NodeInfo,
    Slurm,
    SubmitRejected,
    parse_gres,
    parse_jobs,
    parse_nodes,
)

DATA = Path(__file__).parent / "data" / "slurm-24.11"
H100_ALL = (0, 1, 2, 3, 4, 5, 6, 7)


def captured(name: str) -> dict[str, Any]:
    with (DATA / f"{name}.json").open(encoding="utf-8") as f:
        return json.load(f)


def jobs_of(name: str) -> dict[int, Job]:
    return {job.job_id: job for job in parse_jobs(captured(name))}


def nodes_of(name: str) -> dict[str, NodeInfo]:
    return {node.name: node for node in parse_nodes(captured(name))}


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# ---- jobs ---------------------------------------------------------------------


def test_busy_queue_holds_the_captured_jobs() -> None:
    jobs = parse_jobs(captured("squeue-busy"))

    assert [j.job_id for j in jobs] == [7, 8, 10, 11, 9]
    assert {j.user for j in jobs} == {"alice"}
    assert {j.partition for j in jobs} == {"gpu"}


def test_running_job_holds_its_gpu_indices_from_gres_detail() -> None:
    fill = jobs_of("squeue-busy")[7]

    assert (fill.name, fill.state, fill.flags, fill.reason) == (
        "fill", "RUNNING", (), "None")
    assert fill.nodes == ("h100-1",)
    assert fill.gpus == (GpuAllocation("h100-1", "h100", 8, H100_ALL),)
    assert fill.gpu_indices == {"h100-1": H100_ALL}
    assert fill.gpu_count == 8
    assert fill.tres_per_node == "gres/gpu:h100:8"
    assert fill.submit_time == at(1796315903)
    assert fill.start_time == at(1796315903)
    # A running job's end_time is Slurm's estimate from its time limit.
    assert fill.end_time is None
    assert fill.exit_code == 0
    assert fill.restart_count == 0


def test_pending_job_has_its_reason_and_no_start_or_gpus() -> None:
    waiting = jobs_of("squeue-busy")[8]

    assert (waiting.name, waiting.state, waiting.reason) == (
        "wait8", "PENDING", "Resources")
    # Slurm's JSON carries an expected start for it; it has not started.
    assert waiting.raw["start_time"]["number"] > 0
    assert waiting.start_time is None
    assert waiting.end_time is None
    assert waiting.nodes == ()
    assert waiting.gpus == ()
    assert waiting.gpu_count == 0
    assert waiting.tres_per_node == "gres/gpu:h100:8"


def test_array_tasks_carry_the_array_id_and_their_task_id() -> None:
    jobs = jobs_of("squeue-busy")

    tasks = {j.job_id: (j.array_job_id, j.array_task_id, j.label)
             for j in jobs.values() if j.array_job_id is not None}

    # Slurm gives the array's own id to its last task.
    assert tasks == {10: (9, 0, "9_0"), 11: (9, 1, "9_1"), 9: (9, 2, "9_2")}
    assert {j: jobs[j].gpu_indices for j in tasks} == {
        10: {"a100-1": (0,)}, 11: {"a100-1": (2,)}, 9: {"a100-1": (1,)}}


def test_jobs_that_are_not_array_tasks_are_labelled_by_their_id() -> None:
    jobs = jobs_of("squeue-busy")

    assert (jobs[7].array_job_id, jobs[7].array_task_id) == (None, None)
    assert (jobs[7].label, jobs[8].label) == ("7", "8")


def test_gpus_held_by_jobs_are_the_gpus_nodes_report_used() -> None:
    jobs = parse_jobs(captured("squeue-busy"))
    nodes = nodes_of("node-busy")

    held: dict[str, list[int]] = {}
    for job in jobs:
        for allocation in job.gpus:
            held.setdefault(allocation.node, []).extend(allocation.indices)

    assert {n: sorted(i) for n, i in held.items()} == {
        "a100-1": list(nodes["a100-1"].gpus_used["a100"]),
        "h100-1": list(nodes["h100-1"].gpus_used["h100"]),
    }


def test_empty_queue_has_no_jobs() -> None:
    assert parse_jobs(captured("squeue-empty")) == []


def test_requeued_job_pends_for_its_begin_time_with_a_restart() -> None:
    (victim,) = parse_jobs(captured("squeue-requeued"))

    assert (victim.job_id, victim.user, victim.state) == (1, "bob", "PENDING")
    assert victim.reason == "BeginTime"
    assert victim.restart_count == 1
    assert victim.start_time is None
    assert victim.nodes == ()
    assert victim.gpus == ()
    assert victim.tres_per_node == "gres/gpu:a100:4"


def test_scontrol_and_squeue_agree_on_the_jobs_both_show() -> None:
    squeue = jobs_of("squeue-busy")
    scontrol = jobs_of("job-busy")

    assert set(squeue) < set(scontrol)
    assert all(scontrol[i] == squeue[i] for i in squeue)


def test_ended_jobs_keep_times_and_exit_code_but_lose_gres_detail() -> None:
    jobs = jobs_of("job-busy")

    done = jobs[5]
    assert done.state == "COMPLETED"
    assert (done.start_time, done.end_time) == (at(1796315848), at(1796315856))
    assert done.exit_code == 0
    assert done.nodes == ("a100-1",)
    assert done.gpus == ()

    signalled = jobs[1]
    assert (signalled.state, signalled.reason) == ("FAILED", "RaisedSignal")
    # Killed by a signal: Slurm leaves the return code unset.
    assert signalled.exit_code is None


def test_a_job_id_slurm_does_not_know_is_no_job() -> None:
    data = captured("job-unknown")

    assert data["errors"] == []
    assert parse_jobs(data) == []


# ---- nodes --------------------------------------------------------------------


def test_idle_nodes_as_slurm_reports_them() -> None:
    nodes = nodes_of("node-idle")

    assert sorted(nodes) == ["a100-1", "a100-2", "cpu-1", "h100-1"]
    a100 = nodes["a100-1"]
    assert a100.state == ("IDLE",)
    assert a100.base_state == "IDLE"
    assert a100.has("IDLE") and not a100.has("DRAIN")
    assert a100.gpus == {"a100": 4}
    assert a100.gpus_used == {"a100": ()}
    assert (a100.cpus, a100.alloc_cpus) == (32, 0)
    assert (a100.sockets, a100.cores_per_socket, a100.threads_per_core) == (2, 16, 1)
    assert (a100.real_memory_mb, a100.alloc_memory_mb) == (256000, 0)
    assert a100.weight == 10
    assert a100.features == ("a100", "ampere")
    assert a100.partitions == ("gpu",)
    assert a100.reason == ""


def test_each_node_has_its_pool_shape() -> None:
    nodes = nodes_of("node-idle")

    shape = {n.name: (n.gpus, n.cpus, n.sockets, n.cores_per_socket,
                      n.real_memory_mb, n.features, n.partitions)
             for n in nodes.values()}

    assert shape == {
        "a100-1": ({"a100": 4}, 32, 2, 16, 256000, ("a100", "ampere"), ("gpu",)),
        "a100-2": ({"a100": 4}, 32, 2, 16, 256000, ("a100", "ampere"), ("gpu",)),
        "h100-1": ({"h100": 8}, 48, 2, 24, 512000, ("h100", "hopper"), ("gpu",)),
        "cpu-1": ({}, 16, 2, 8, 64000, ("cpu",), ("cpu",)),
    }


def test_cpu_node_has_no_gpus_used_or_total() -> None:
    cpu = nodes_of("node-busy")["cpu-1"]

    assert (cpu.gpus, cpu.gpus_used) == ({}, {})


def test_busy_nodes_are_mixed_with_the_indices_in_use() -> None:
    nodes = nodes_of("node-busy")

    a100, h100 = nodes["a100-1"], nodes["h100-1"]
    assert a100.state == ("MIXED",)
    assert a100.gpus_used == {"a100": (0, 1, 2)}
    assert (a100.alloc_cpus, a100.alloc_memory_mb) == (3, 3072)
    assert h100.state == ("MIXED", "PLANNED")
    assert h100.base_state == "MIXED"
    assert h100.has("PLANNED")
    assert h100.gpus_used == {"h100": H100_ALL}
    assert nodes["a100-2"].state == ("IDLE",)


def test_down_node_is_down_and_not_responding() -> None:
    nodes = nodes_of("node-down")

    lost = nodes["a100-2"]
    assert lost.state == ("DOWN", "NOT_RESPONDING")
    assert lost.base_state == "DOWN"
    assert lost.has("NOT_RESPONDING")
    assert not lost.has("DRAIN")
    assert lost.reason == "Not responding"
    # Slurm still reports the GPUs it is configured with.
    assert lost.gpus == {"a100": 4}
    assert [n.name for n in nodes.values() if n.base_state != "IDLE"] == ["a100-2"]


def test_nodes_agree_with_sinfo() -> None:
    nodes = nodes_of("node-busy")

    for entry in captured("sinfo-busy")["sinfo"]:
        (name,) = entry["nodes"]["nodes"]
        node = nodes[name]
        assert node.state == tuple(entry["node"]["state"]), name
        assert node.features == tuple(entry["features"]["total"].split(",")), name
        assert node.partitions == (entry["partition"]["name"],), name
        assert node.cpus == entry["cpus"]["total"], name
        totals = {t or "": c for _, t, c, _ in parse_gres(entry["gres"]["total"])}
        assert node.gpus == totals, name
        used = {t or "": i for _, t, _, i in parse_gres(entry["gres"]["used"])}
        assert node.gpus_used == used, name


def test_node_state_missing_from_json_is_unknown() -> None:
    raw = dict(captured("node-idle")["nodes"][0])
    raw["state"] = []

    (node,) = parse_nodes({"nodes": [raw]})

    assert node.state == ("UNKNOWN",)
    assert node.base_state == "UNKNOWN"


# ---- GRES strings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("(null)", []),
        ("", []),
        ("N/A", []),
        ("gpu:a100:2(IDX:0,2-3)", [("gpu", "a100", 2, (0, 2, 3))]),
        ("gpu:h100:8(IDX:0-7)", [("gpu", "h100", 8, H100_ALL)]),
        # Socket affinity in a node's gres is not a list of GPU indices.
        ("gpu:a100:4(S:0-1)", [("gpu", "a100", 4, ())]),
        ("gpu:a100:0(IDX:N/A)", [("gpu", "a100", 0, ())]),
        ("gpu:a100:2(IDX:0-1),gpu:h100:1(IDX:3)",
         [("gpu", "a100", 2, (0, 1)), ("gpu", "h100", 1, (3,))]),
        ("gpu:a100:4(S:0-1),gpu:h100:2(S:1)",
         [("gpu", "a100", 4, ()), ("gpu", "h100", 2, ())]),
        ("gpu:a100:1(IDX:0),mps:100",
         [("gpu", "a100", 1, (0,)), ("mps", None, 100, ())]),
        ("gpu:2", [("gpu", None, 2, ())]),
        ("gpu:2(IDX:1,3)", [("gpu", None, 2, (1, 3))]),
    ],
)
def test_parse_gres(text: str, parsed: list[tuple]) -> None:
    assert parse_gres(text) == parsed


def test_untyped_gpus_on_a_node_are_counted_under_no_type() -> None:
    raw = dict(captured("node-idle")["nodes"][0], gres="gpu:2",
               gres_used="gpu:1(IDX:1)")

    (node,) = parse_nodes({"nodes": [raw]})

    assert (node.gpus, node.gpus_used) == ({"": 2}, {"": (1,)})


def test_a_job_on_two_nodes_has_one_allocation_per_node() -> None:
    raw = dict(captured("squeue-busy")["jobs"][0], nodes="a100-[1-2]",
               gres_detail=["gpu:a100:4(IDX:0-3)", "gpu:a100:2(IDX:1-2)"])

    (job,) = parse_jobs({"jobs": [raw]})

    assert job.nodes == ("a100-1", "a100-2")
    assert job.gpu_indices == {"a100-1": (0, 1, 2, 3), "a100-2": (1, 2)}
    assert job.gpu_count == 6


# ---- host lists ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostlist", "names"),
    [
        ("h100-1", ["h100-1"]),
        ("", []),
        ("a100-[1-2],cpu-1", ["a100-1", "a100-2", "cpu-1"]),
        ("a100-[01-03,05],cpu-1",
         ["a100-01", "a100-02", "a100-03", "a100-05", "cpu-1"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("gpu[1-2]-ib", ["gpu1-ib", "gpu2-ib"]),
    ],
)
def test_expand(hostlist: str, names: list[str]) -> None:
    assert expand(hostlist) == names


@pytest.mark.parametrize(
    ("names", "hostlist"),
    [
        (["a100-1", "a100-2", "cpu-1", "h100-1"], "a100-[1-2],cpu-1,h100-1"),
        (["a100-01", "a100-02", "a100-03", "a100-05"], "a100-[01-03,05]"),
        (["h100-1"], "h100-1"),
        (["login"], "login"),
        # Order is kept, so a name between two runs splits them.
        (["a1", "b1", "a2"], "a1,b1,a2"),
    ],
)
def test_compress(names: list[str], hostlist: str) -> None:
    assert compress(names) == hostlist
    assert expand(hostlist) == names


def test_captured_node_names_compress_and_expand_back() -> None:
    names = sorted(nodes_of("node-idle"))

    assert expand(compress(names)) == names


# ---- the client over a fake transport -----------------------------------------


class FakeTransport:
    """Answers each command by its program name; records what it was asked."""

    def __init__(self, **replies: tuple[int, str, str]) -> None:
        self.replies = replies
        self.calls: list[tuple[tuple[str, ...], str | None, str | None]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        self.calls.append((tuple(argv), user, stdin))
        exit_code, stdout, stderr = self.replies[argv[0]]
        return CommandResult(tuple(argv), exit_code, stdout, stderr)


def text_of(name: str) -> str:
    return (DATA / f"{name}.json").read_text(encoding="utf-8")


def replying(**replies: tuple[int, str, str]) -> tuple[Slurm, FakeTransport]:
    transport = FakeTransport(**replies)
    return Slurm(transport, admin="slurm"), transport


@pytest.mark.parametrize("stdout", ["42\n", "42;gpusim\n"])
def test_submit_returns_the_job_id_of_parsable_output(stdout: str) -> None:
    slurm, transport = replying(sbatch=(0, stdout, ""))

    job_id = slurm.submit(["--gres=gpu:a100:2"], "#!/bin/bash\ntrue\n", user="bob")

    assert job_id == 42
    assert transport.calls == [
        (("sbatch", "--parsable", "--gres=gpu:a100:2"), "bob", "#!/bin/bash\ntrue\n")
    ]


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ("sbatch: error: Batch job submission failed: Requested node configuration "
         "is not available\n",
         "Batch job submission failed: Requested node configuration is not available"),
        ("sbatch: error: Invalid generic resource (gres) specification\n",
         "Invalid generic resource (gres) specification"),
    ],
)
def test_submit_refused_raises_with_slurms_message(stderr: str, message: str) -> None:
    slurm, _ = replying(sbatch=(1, "", stderr))

    with pytest.raises(SubmitRejected) as caught:
        slurm.submit(["--gres=gpu:a100:5"], "#!/bin/bash\ntrue\n", user="alice")

    assert caught.value.message == message
    assert str(caught.value) == f"submission rejected: {message}"


def test_jobs_asks_squeue_for_every_state_as_json() -> None:
    slurm, transport = replying(squeue=(0, text_of("squeue-busy"), ""))

    jobs = slurm.jobs()

    assert [j.label for j in jobs] == ["7", "8", "9_0", "9_1", "9_2"]
    ((argv, user, _),) = transport.calls
    assert argv[0] == "squeue"
    assert "--states=all" in argv and "--json" in argv and "--all" in argv
    assert user == "slurm"


def test_jobs_on_an_empty_queue_is_empty() -> None:
    slurm, _ = replying(squeue=(0, text_of("squeue-empty"), ""))

    assert slurm.jobs() == []


def test_job_unknown_to_slurm_is_no_job() -> None:
    slurm, transport = replying(scontrol=(0, text_of("job-unknown"), ""))

    assert slurm.job(999) == []
    assert transport.calls[0][0] == ("scontrol", "show", "job", "--json", "999")


def test_job_refused_as_an_invalid_id_is_no_job() -> None:
    slurm, _ = replying(
        scontrol=(1, "", "slurm_load_jobs error: Invalid job id specified\n"))

    assert slurm.job(999) == []


def test_nodes_asks_scontrol_and_parses_its_json() -> None:
    slurm, transport = replying(scontrol=(0, text_of("node-down"), ""))

    nodes = {n.name: n.state for n in slurm.nodes()}

    assert nodes["a100-2"] == ("DOWN", "NOT_RESPONDING")
    assert transport.calls[0][0] == ("scontrol", "show", "node", "--json")


def test_accounting_returns_sacct_records_of_the_jobs_asked() -> None:
    slurm, transport = replying(sacct=(0, text_of("sacct-requeued"), ""))

    (record,) = slurm.accounting([1, 3])

    assert record["job_id"] == 1
    assert record["flags"] == ["STARTED_ON_SCHEDULE", "START_RECEIVED"]
    argv = transport.calls[0][0]
    assert argv[:2] == ("sacct", "--json") and argv[-2:] == ("-j", "1,3")


def test_output_that_is_not_json_raises_command_error() -> None:
    slurm, _ = replying(squeue=(0, "squeue: error: something else\n", ""))

    with pytest.raises(CommandError) as caught:
        slurm.jobs()

    assert caught.value.argv[0] == "squeue"
    assert caught.value.stdout == "squeue: error: something else\n"
    assert "output is not JSON" in str(caught.value)


def test_failed_command_raises_command_error_with_its_output() -> None:
    slurm, _ = replying(
        squeue=(1, "", "slurm_load_jobs error: Unable to contact slurm controller\n"))

    with pytest.raises(CommandError) as caught:
        slurm.jobs()

    assert caught.value.exit_code == 1
    assert str(caught.value).endswith(
        "exited 1: slurm_load_jobs error: Unable to contact slurm controller")


def test_cancel_with_a_signal_signals_the_whole_job() -> None:
    slurm, transport = replying(scancel=(0, "", ""))

    slurm.cancel(42, signal="USR1")

    assert transport.calls == [
        (("scancel", "--signal", "USR1", "--full", "42"), "slurm", None)]


def test_version_is_the_last_word_of_sinfo_version() -> None:
    slurm, _ = replying(sinfo=(0, "slurm 24.11.5\n", ""))

    assert slurm.version() == "24.11.5"


def test_submit_many_runs_sbatch_once_per_job_in_one_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in sbatch on PATH: it files each script it is given and answers
    # like Slurm does, refusing an unknown GRES.
    fake = tmp_path / "sbatch"
    fake.write_text(
        "#!/bin/bash\n"
        'n=$(ls "$SUBMITTED" | wc -l); cat > "$SUBMITTED/$n"\n'
        'for a; do case $a in --gres=fpga*) echo "sbatch: error: Invalid generic '
        'resource (gres) specification" >&2; exit 1;; esac; done\n'
        'echo "$((100 + n));gpusim"\n')
    fake.chmod(0o755)
    (tmp_path / "jobs").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITTED", str(tmp_path / "jobs"))
    transport = LocalTransport()
    calls: list[Sequence[str]] = []
    real_run = transport.run

    def counted(argv: Sequence[str], **kwargs: object) -> CommandResult:
        calls.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(transport, "run", counted)
    slurm = Slurm(transport)

    outcomes = slurm.submit_many(
        [(["--hold"], "#!/bin/bash\necho one\n"), (["--gres=fpga:1"], "#!/bin/bash\n"),
         (["--hold"], "#!/bin/bash\necho three\n")], user=getpass.getuser(),
        parallel=1)

    assert outcomes[0] == 100 and outcomes[2] == 102
    assert isinstance(outcomes[1], SubmitRejected)
    assert outcomes[1].message == "Invalid generic resource (gres) specification"
    assert len(calls) == 1
    assert (tmp_path / "jobs" / "2").read_text() == "#!/bin/bash\necho three\n"


def test_submit_many_in_parallel_answers_each_job_in_the_order_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This stand-in sbatch takes a while and answers with the number its
    # script carries, so each answer can be told apart whatever the order.
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/bash\nsleep 0.0$((RANDOM % 5))\n"
                    "echo \"$(( 1000 + $(tail -n 1 | tr -d '# ') ))\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    slurm = Slurm(LocalTransport())
    jobs = [([], f"#!/bin/bash\n# {i}\n") for i in range(40)]

    outcomes = slurm.submit_many(jobs, user=getpass.getuser(), parallel=4)

    assert outcomes == [1000 + i for i in range(40)]


def test_a_reused_job_id_means_its_newest_accounting_record() -> None:
    from sim.runner import latest_records

    (record,) = json.loads(text_of("sacct-requeued"))["jobs"]
    older = json.loads(json.dumps(record))
    older["time"]["submission"] -= 86400
    older["name"] = "from-before-a-fleet-switch"

    assert latest_records([record, older])[record["job_id"]] is record
    assert latest_records([older, record])[record["job_id"]] is record
