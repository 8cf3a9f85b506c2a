"""The `sim` command line."""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sim import paths
from sim.errors import SimError, SpecError
from sim.fleet import Fleet, load_fleet
from sim.render import render_fleet, write_rendering

log = logging.getLogger("sim")

CLUSTER_DIR_KEY = "SIM_CLUSTER_DIR"


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(paths.FLEETS.glob("*.yaml"))}


def resolve_fleet(name: str) -> Path:
    """A preset name or a path to a spec file."""
    known = presets()
    if name in known:
        return known[name]
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"{path}: no such fleet spec file")
        return path
    raise SpecError(
        f"unknown fleet {name!r} (presets: {', '.join(known)}; "
        "or give the path of a .yaml spec)"
    )


def set_env_value(env_file: Path, key: str, value: str | None) -> None:
    """Set (or, with None, remove) one KEY=value line of a compose .env file."""
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    kept = [line for line in lines if not line.startswith(f"{key}=")]
    if value is not None:
        kept.append(f"{key}={value}")
    env_file.write_text("".join(f"{line}\n" for line in kept))


def cmd_render(args: argparse.Namespace) -> int:
    fleet = load_fleet(resolve_fleet(args.fleet))
    files = render_fleet(fleet)
    write_rendering(files, Path(args.out))
    print(
        f"rendered fleet {fleet.name!r}: {len(fleet.nodes())} nodes in "
        f"{len(fleet.hosts())} containers -> {args.out}"
    )
    return 0


def cmd_fleet_list(args: argparse.Namespace) -> int:
    for name, path in presets().items():
        fleet = load_fleet(path)
        gpus = sum(p.gpus * p.nodes for p in fleet.pools)
        print(
            f"{name:<10} {len(fleet.nodes()):>5} nodes {gpus:>6} GPUs  "
            f"{fleet.description}"
        )
    return 0


def cmd_fleet_show(args: argparse.Namespace) -> int:
    fleet = load_fleet(resolve_fleet(args.fleet))
    print(f"fleet {fleet.name}: {fleet.description}")
    print(
        f"{'pool':<10} {'nodes':>5} {'gpu':<12} {'S:C:T':<9} {'cpus':>5} "
        f"{'memory_mb':>10}  partitions"
    )
    for pool in fleet.pools:
        gpu = f"{pool.gpu.type} x{pool.gpu.count}" if pool.gpu else "-"
        topo = f"{pool.sockets}:{pool.cores_per_socket}:{pool.threads_per_core}"
        shards = f"  ({pool.gpu.shards_per_gpu} shards per GPU)" if pool.shards else ""
        print(
            f"{pool.name:<10} {pool.nodes:>5} {gpu:<12} {topo:<9} {pool.cpus:>5} "
            f"{pool.memory_mb:>10}  {','.join(fleet.partitions_of(pool))}{shards}"
        )
    policy = fleet.policy
    print()
    for qos in policy.qos:
        limits = _limits_text(qos.limits)
        extra = [f"priority {qos.priority}"]
        if qos.preempt:
            extra.append(f"preempts {','.join(qos.preempt)} ({qos.preempt_mode})")
        if limits:
            extra.append(limits + (" (rejected at submission)" if qos.deny_on_limit
                                   else ""))
        print(f"qos      {qos.name:<10} {', '.join(extra)}")
    members = {a.name: [u.name for u in policy.users if a.name in u.accounts]
               for a in policy.accounts}
    for account in policy.accounts:
        parts = [f"under {account.parent}", f"fairshare {account.fairshare}",
                 f"users {','.join(members[account.name]) or '-'}"]
        limits = _limits_text(account.limits)
        print(f"account  {account.name:<10} "
              f"{', '.join(parts + ([limits] if limits else []))}")
    return 0


def _limits_text(limits: BaseModel) -> str:
    """`per_user gpu=4; per_job gpu=2`: the GPU limits that are set."""
    return "; ".join(
        f"{kind} " + ",".join(f"{k}={v}" for k, v in held.items())
        for kind, held in limits.model_dump().items() if held)


def use_fleet(fleet: Fleet, *, restart: bool) -> None:
    """Render `fleet` for compose and, if asked, replace the running cluster with it."""
    write_rendering(render_fleet(fleet), paths.CHOSEN_RENDERING)
    relative = paths.CHOSEN_RENDERING.relative_to(paths.PROJECT)
    set_env_value(paths.PROJECT / ".env", CLUSTER_DIR_KEY, f"./{relative}")
    if not restart:
        return
    from sim.cluster import DockerCluster

    cluster = DockerCluster()
    cluster.down()
    # The controller's saved state describes the old nodes; accounting,
    # secrets and home folders are kept.
    for volume in cluster.docker.volumes.list(
        filters={"label": f"com.docker.compose.project={cluster.project}"}
    ):
        if volume.attrs["Labels"].get("com.docker.compose.volume") == "slurmctld-state":
            volume.remove(force=True)
    cluster.up()


def cmd_fleet_use(args: argparse.Namespace) -> int:
    fleet = load_fleet(resolve_fleet(args.fleet))
    use_fleet(fleet, restart=not args.no_restart)
    state = "rendered" if args.no_restart else "running"
    print(f"fleet {fleet.name!r} {state}: {len(fleet.nodes())} nodes")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from sim.cluster import DockerCluster

    DockerCluster().up(build=not args.no_build, timeout_s=args.timeout)
    return cmd_status(args)


def cmd_down(args: argparse.Namespace) -> int:
    from sim.cluster import DockerCluster

    DockerCluster().down(volumes=args.volumes)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sim.cluster import DockerCluster, SessionTransport
    from sim.slurm import Slurm

    slurm = Slurm(SessionTransport(DockerCluster()))
    print(f"{'node':<14} {'state':<18} {'gpus':<14} {'used':<10} partitions")
    for node in slurm.nodes():
        gpus = ",".join(f"{t}:{n}" for t, n in node.gpus.items()) or "-"
        used = sum(len(i) for i in node.gpus_used.values())
        print(
            f"{node.name:<14} {'+'.join(node.state):<18} {gpus:<14} "
            f"{used:<10} {','.join(node.partitions)}"
        )
    return 0


def scenario_files(names: Sequence[str]) -> list[Path]:
    """Scenario names (file stems in scenarios/) or paths; none means all."""
    known = {p.stem: p for p in sorted(paths.SCENARIOS.glob("*.yaml"))}
    if not names:
        return list(known.values())
    found = []
    for name in names:
        if name in known:
            found.append(known[name])
        elif Path(name).is_file():
            found.append(Path(name))
        else:
            raise SpecError(
                f"unknown scenario {name!r} (scenarios: "
                f"{', '.join(known)}; or give the path of a .yaml file)"
            )
    return found


def load_scenarios(names: Sequence[str]) -> list:
    from sim.ledger import load_ledger
    from sim.scenario import load_scenario

    ids = load_ledger().ids()
    return [load_scenario(path, ids) for path in scenario_files(names)]


def cmd_list(args: argparse.Namespace) -> int:
    for scenario in load_scenarios(args.scenarios):
        print(f"{scenario.name:<28} {', '.join(scenario.claims)}")
        print(f"{'':<28} {scenario.description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime

    from sim.expect import FAILED, NOT_RUN
    from sim.ledger import load_ledger
    from sim.report import RunInfo, run_document, write_json, write_junit, write_reports
    from sim.verdicts import NO_EVIDENCE, verdicts

    ledger = load_ledger()
    scenarios = load_scenarios(args.scenarios)
    runner, target = connect_runner(args)
    started, began = datetime.now().astimezone(), time.monotonic()
    results = []
    for i, scenario in enumerate(scenarios, 1):
        print(
            f"[{i}/{len(scenarios)}] {scenario.name} ({', '.join(scenario.claims)})",
            flush=True,
        )
        result = runner.run(scenario)
        passed = sum(e.passed for e in result.expectations)
        print(
            f"  -> {result.status}: {passed}/{len(result.expectations)} expectations "
            f"in {result.duration_s:.1f}s",
            flush=True,
        )
        results.append(result)
    runner.clean_up()
    found = verdicts(ledger, results, mode="real" if args.target == "local" else "fake")
    fleet = runner.fleet
    run = RunInfo(
        started_at=started.isoformat(timespec="seconds"),
        target=target,
        mode="real" if args.target == "local" else "fake",
        slurm_version=runner.slurm.version(),
        fleet=f"{fleet.name}: {fleet.description}"
        if fleet
        else "not rendered by the kit",
        duration_s=round(time.monotonic() - began, 1),
    )
    print_summary(results)
    print_verdicts(found)
    folder = Path(
        args.report_dir
        or paths.PROJECT / "reports" / started.strftime("run-%Y%m%d-%H%M%S")
    )
    gpu_rows = (
        [(n.name, i) for n in fleet.nodes() for i in range(n.pool.gpus)]
        if fleet
        else None
    )
    write_reports(folder, results, found, run, gpu_rows)
    _point_latest(folder)
    print(f"reports: {folder}/report.md, report.html, run.json, timeline.png")
    if args.json:
        write_json(run_document(results, found, run), Path(args.json))
    if args.junit:
        write_junit(results, Path(args.junit))
    failed = any(r.status == FAILED for r in results)
    skipped = any(r.status == NOT_RUN for r in results) or any(
        v.verdict == NO_EVIDENCE and v.claim.kit.checks for v in found
    )
    return 1 if failed or (args.strict and skipped) else 0


def _point_latest(folder: Path) -> None:
    """reports/latest names the newest run's folder."""
    latest = folder.parent / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(folder.name)


def connect_runner(args: argparse.Namespace) -> tuple[Any, str]:
    from sim.cluster import DockerCluster, SessionTransport
    from sim.runner import Runner
    from sim.slurm import LocalTransport, Slurm

    if args.target == "local":
        # An existing cluster: its login node's own commands, no Docker, and
        # nothing reconfigured.
        runner = Runner(
            Slurm(LocalTransport()),
            None,
            fleet=None,
            poll_interval_s=args.poll,
            progress=lambda line: print(line, flush=True),
        )
        host = platform.node()
        return runner, f"existing Slurm cluster through the local commands of {host}"
    cluster = DockerCluster()
    slurm = Slurm(SessionTransport(cluster))
    runner = Runner(
        slurm,
        cluster,
        fleet=cluster.fleet(),
        poll_interval_s=args.poll,
        progress=lambda line: print(line, flush=True),
    )
    return runner, f"compose cluster {cluster.project!r} with fake GPU GRES"


def print_verdicts(found: list) -> None:
    print()
    print(f"{'claim':<32} {'group':<8} verdict")
    for v in found:
        print(f"{v.claim.id:<32} {v.claim.group:<8} {v.verdict}")
    print("\nOutside both modes (no mode of this lab supports these):")
    for v in found:
        if v.claim.group == "neither":
            print(f"  - {v.claim.text}")


def print_summary(results: list) -> None:
    print()
    print(f"{'scenario':<30} {'status':<8} {'expectations':>12} {'time':>7}")
    for r in results:
        passed = sum(e.passed for e in r.expectations)
        print(
            f"{r.name:<30} {r.status:<8} {passed:>5}/{len(r.expectations):<6} "
            f"{r.duration_s:>6.1f}s"
        )
    counts = {
        s: sum(r.status == s for r in results) for s in ("passed", "failed", "not_run")
    }
    print(", ".join(f"{n} {s}" for s, n in counts.items()))


def cmd_lint_claims(args: argparse.Namespace) -> int:
    from sim.lint import lint_paths

    paths_given = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths_given if not p.exists()]
    if missing:
        raise SpecError(f"no such file or folder: {', '.join(missing)}")
    findings = lint_paths(paths_given)
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} overclaiming phrase(s) found", file=sys.stderr)
    return 1 if findings else 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sim",
        description="A Slurm cluster with fake GPU GRES, rendered from a fleet spec.",
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log decisions")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser("render", help="render a fleet's Slurm and compose files")
    render.add_argument("--fleet", default="default", help="preset name or spec path")
    render.add_argument(
        "--out",
        default=str(paths.CHOSEN_RENDERING),
        help="folder to write (replaced whole)",
    )
    render.set_defaults(func=cmd_render)

    fleet = sub.add_parser("fleet", help="list, show or switch fleets")
    fleet_sub = fleet.add_subparsers(
        dest="fleet_command", required=True, metavar="ACTION"
    )
    fleet_sub.add_parser("list", help="the presets").set_defaults(func=cmd_fleet_list)
    show = fleet_sub.add_parser("show", help="a fleet's pools")
    show.add_argument("fleet", nargs="?", default="default")
    show.set_defaults(func=cmd_fleet_show)
    use = fleet_sub.add_parser(
        "use", help="render a fleet and restart the cluster on it"
    )
    use.add_argument("fleet", help="preset name or spec path")
    use.add_argument(
        "--no-restart", action="store_true", help="only render and point compose at it"
    )
    use.set_defaults(func=cmd_fleet_use)

    up = sub.add_parser(
        "up", help="build and start the cluster, wait until every node is in service"
    )
    up.add_argument("--no-build", action="store_true")
    up.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the cluster")
    down.add_argument(
        "--volumes",
        action="store_true",
        help="also delete secrets, accounting and state",
    )
    down.set_defaults(func=cmd_down)

    sub.add_parser("status", help="nodes as Slurm reports them").set_defaults(
        func=cmd_status
    )

    listing = sub.add_parser(
        "list", help="scenarios and the ledger claims they evidence"
    )
    listing.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run scenarios against the cluster")
    run.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help="names in scenarios/ or paths (default: all)",
    )
    run.add_argument("--json", metavar="FILE", help="write the results as JSON")
    run.add_argument("--junit", metavar="FILE", help="write the results as JUnit XML")
    run.add_argument(
        "--poll",
        type=float,
        default=0.25,
        metavar="S",
        help="observation interval in seconds (default 0.25)",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit non-zero when a scenario could not run or a claim the kit "
        "checks has no evidence",
    )
    run.add_argument(
        "--target",
        choices=["compose", "local"],
        default="compose",
        help="compose: the kit's cluster (fake GPUs); local: an existing "
        "cluster, through this machine's Slurm commands",
    )
    run.add_argument(
        "--report-dir",
        metavar="DIR",
        help="folder for the reports (default reports/run-TIMESTAMP)",
    )
    run.set_defaults(func=cmd_run)

    lint = sub.add_parser(
        "lint-claims", help="flag phrasing that overclaims for a fake-mode lab"
    )
    lint.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="Markdown, text or HTML files, or folders of them",
    )
    lint.set_defaults(func=cmd_lint_claims)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except SpecError as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 2
    except SimError as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
