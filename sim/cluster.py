"""Cluster control: the compose cluster's containers, through Docker's API.

Bringing the cluster up and down goes through `docker compose` (the compose
file is the cluster's definition); everything done to a running cluster
(commands, faults, logs) goes through the Docker SDK.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from sim.errors import ClusterError, WaitTimeout
from sim.fleet import Fleet
from sim.paths import PROJECT
from sim.slurm import CommandResult

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "gpusim"
# Lets a command receive its standard input through the exec API, which
# takes none: the text travels in an environment variable.
_STDIN_SHIM = 'printf "%s" "$SIM_STDIN" | exec "$@"'


def project_name() -> str:
    return (
        os.environ.get("SIM_COMPOSE_PROJECT")
        or os.environ.get("SIM_PROJECT_NAME")
        or DEFAULT_PROJECT
    )


class DockerCluster:
    """The containers of one compose project, found by compose's labels."""

    def __init__(
        self,
        project: str | None = None,
        client: docker.DockerClient | None = None,
        directory: Path = PROJECT,
    ):
        self.project = project or project_name()
        self._exec_lock = threading.Lock()
        self.directory = directory
        try:
            self.docker = client or docker.from_env()
            self.docker.ping()
        except docker.errors.DockerException as exc:
            raise ClusterError(f"cannot reach the Docker engine: {exc}") from None

    # ---- lifecycle, through compose ---------------------------------------------

    def compose(self, *args: str, timeout_s: float = 900) -> str:
        if not shutil.which("docker"):
            raise ClusterError(
                "the docker command is not installed here; "
                "bring the cluster up from the host"
            )
        argv = [
            "docker",
            "compose",
            "--project-directory",
            str(self.directory),
            "-p",
            self.project,
            *args,
        ]
        log.info("running %s", " ".join(argv))
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise ClusterError(
                f"{' '.join(argv[1:])} exited {done.returncode}:\n{tail}"
            )
        return done.stdout

    def up(self, *, build: bool = True, timeout_s: float = 900) -> None:
        args = ["up", "-d", "--wait", "--remove-orphans"]
        if build:
            args.append("--build")
        try:
            self.compose(*args, timeout_s=timeout_s)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.health_report()}") from None

    def health_report(self) -> str:
        """Why containers are not healthy: each one's last health-check output."""
        lines = []
        for container in self.containers():
            state = container.attrs["State"]
            health = state.get("Health") or {}
            if state["Status"] == "running" and health.get("Status", "healthy") in (
                "healthy",
                "starting",
            ):
                continue
            checks = health.get("Log") or [{}]
            said = (checks[-1].get("Output") or "").strip().replace("\n", "; ")
            status = health.get("Status") or state["Status"]
            lines.append(f"{container.name}: {status}{': ' + said if said else ''}")
        return "\n".join(lines) or "every container is running and healthy"

    def down(self, *, volumes: bool = False) -> None:
        self.compose("down", "--remove-orphans", *(["-v"] if volumes else []))

    # ---- containers ------------------------------------------------------------------

    def containers(self, role: str | None = None) -> list[Container]:
        labels = [f"com.docker.compose.project={self.project}"]
        if role:
            labels.append(f"sim.role={role}")
        return self.docker.containers.list(all=True, filters={"label": labels})

    def service(self, name: str) -> Container:
        found = self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={name}",
                ]
            },
        )
        if not found:
            raise ClusterError(
                f"no container of service {name!r} in compose project "
                f"{self.project!r}; is the cluster up?"
            )
        return found[0]

    def host_of(self, node: str) -> Container:
        """The container whose slurmd serves `node`."""
        for container in self.containers("node"):
            if node in container.labels.get("sim.nodes", "").split(","):
                return container
        raise ClusterError(
            f"no container serves node {node!r} in project {self.project!r}"
        )

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        workdir: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        container = self.service(service)
        return self.exec_in(
            container,
            argv,
            user=user,
            stdin=stdin,
            workdir=workdir,
            timeout_s=timeout_s,
        )

    def exec_in(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        workdir: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        command = list(argv)
        environment = {}
        if stdin is not None:
            command = ["bash", "-c", _STDIN_SHIM, "sim-stdin", *command]
            environment["SIM_STDIN"] = stdin
        if timeout_s:
            command = ["timeout", str(int(timeout_s)), *command]
        try:
            # docker-py's client is not safe across threads (the observer
            # polls on one): frames of two execs can interleave.
            with self._exec_lock:
                exit_code, (out, err) = container.exec_run(
                    command,
                    user=user or "",
                    workdir=workdir,
                    environment=environment,
                    demux=True,
                )
        except docker.errors.APIError as exc:
            raise ClusterError(
                f"exec in {container.name} failed: {exc.explanation}"
            ) from None
        return CommandResult(
            tuple(argv),
            exit_code,
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    def fleet(self) -> Fleet | None:
        """The fleet the cluster was rendered from, as the controller has it."""
        result = self.exec("slurmctld", ["cat", "/etc/sim/cluster/fleet.json"])
        if result.exit_code != 0:
            return None
        return Fleet.model_validate_json(result.stdout)

    def log_tail(self, path: str, lines: int = 20) -> str:
        """The last lines of a Slurm log (all logs share one volume)."""
        result = self.exec("slurmctld", ["tail", "-n", str(lines), path])
        return (
            result.stdout
            if result.exit_code == 0
            else f"({path}: {result.stderr.strip()})"
        )

    # ---- faults -------------------------------------------------------------------

    def stop_node(self, node: str) -> None:
        """A clean shutdown of the node's slurmd (jobs on it are lost to Slurm)."""
        self._node_action(node, "stop", signal="TERM")

    def kill_node(self, node: str) -> None:
        """The node dies at once, as a machine losing power."""
        self._node_action(node, "kill", signal="KILL")

    def start_node(self, node: str) -> None:
        container = self.host_of(node)
        container.reload()
        if container.status != "running":
            container.start()
            return
        if self._shared(container) and not self._slurmd_alive(container, node):
            self.exec_in(container, ["slurmd", "-N", node]).check()

    def revive(self) -> None:
        """Start whatever a fault left stopped: node containers, slurmd, slurmctld."""
        for container in self.containers():
            role = container.labels.get("sim.role")
            if role in ("keygen", "policy", "fleet", "kit"):
                continue
            if container.status != "running":
                log.info("starting %s", container.name)
                container.start()
            elif role == "node" and self._shared(container):
                for node in container.labels["sim.nodes"].split(","):
                    if not self._slurmd_alive(container, node):
                        self.exec_in(container, ["slurmd", "-N", node]).check()

    def _slurmd_alive(self, container: Container, node: str) -> bool:
        probe = f'kill -0 "$(cat /run/slurm/slurmd-{node}.pid 2>/dev/null)" 2>/dev/null'
        return self.exec_in(container, ["bash", "-c", probe]).exit_code == 0

    def stop_service(self, name: str, timeout_s: float = 30) -> None:
        """A clean stop of a cluster service (slurmdbd, mariadb)."""
        self.service(name).stop(timeout=int(timeout_s))

    def start_service(self, name: str) -> None:
        container = self.service(name)
        container.reload()
        if container.status != "running":
            container.start()

    def restart_controller(self, timeout_s: float = 60) -> None:
        container = self.service("slurmctld")
        container.restart(timeout=int(timeout_s))

    def _node_action(self, node: str, action: str, *, signal: str) -> None:
        container = self.host_of(node)
        if not self._shared(container):
            # One node per container: the container is the machine.
            if action == "kill":
                container.kill()
            else:
                container.stop(timeout=10)
            return
        # Several nodes share the container: end this node's slurmd and every
        # job step it started, and nothing else.
        script = (
            'pid=$(cat "/run/slurm/slurmd-$1.pid") || exit 1; '
            'steps=$(grep -lxz "SLURMD_NODENAME=$1" /proc/[0-9]*/environ '
            "2>/dev/null | cut -d/ -f3); "
            'kill -"$2" $pid $steps'
        )
        argv = ["bash", "-c", script, "sim-fault", node, signal]
        self.exec_in(container, argv).check()

    @staticmethod
    def _shared(container: Container) -> bool:
        return len(container.labels.get("sim.nodes", "").split(",")) > 1


class ExecTransport:
    """Runs Slurm's client commands in the cluster's login container."""

    def __init__(self, cluster: DockerCluster, service: str = "login"):
        self.cluster = cluster
        self.service = service
        # Found once: looking the container up costs a round trip per command.
        self._container: Container | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        workdir = f"/home/{user}" if user and user != "root" else None

        def attempt() -> CommandResult:
            if self._container is None:
                self._container = self.cluster.service(self.service)
            return self.cluster.exec_in(self._container, argv, user=user, stdin=stdin,
                                        workdir=workdir, timeout_s=timeout_s)

        try:
            return attempt()
        except ClusterError:
            # The container may have been recreated since: find it again.
            self._container = None
            return attempt()


class SessionTransport:
    """Runs Slurm's client commands through a command session in the login
    container (sim.session): one `docker exec` per thread, not per command.

    Each thread gets its own session, so the observer's polls never wait
    behind a scenario's submissions. A session that breaks (the container
    was recreated, say) is opened again once; where none can be opened, the
    command goes through a plain `docker exec`.
    """

    def __init__(self, cluster: DockerCluster, service: str = "login"):
        self.cluster = cluster
        self.service = service
        self.fallback = ExecTransport(cluster, service)
        self._local = threading.local()
        self._sessions: list[_Session] = []
        self._sessions_lock = threading.Lock()

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        timeout_s: float = 60,
    ) -> CommandResult:
        for _ in range(2):
            session = getattr(self._local, "session", None)
            if session is None:
                try:
                    session = self._open()
                except (ClusterError, OSError) as exc:
                    log.debug("no command session (%s); using docker exec", exc)
                    break
            try:
                return session.call(argv, user=user, stdin=stdin, timeout_s=timeout_s)
            except (OSError, ValueError, SessionClosed) as exc:
                log.debug("command session broke (%s); opening another", exc)
                session.close()
                self._local.session = None
        return self.fallback.run(argv, user=user, stdin=stdin, timeout_s=timeout_s)

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _open(self) -> _Session:
        container = self.cluster.service(self.service)
        api = self.cluster.docker.api
        with self.cluster._exec_lock:
            try:
                exec_id = api.exec_create(
                    container.id, ["python3", "-u", "-m", "sim.session"],
                    stdin=True, stdout=True, stderr=True, tty=False,
                )["Id"]
                sock = api.exec_start(exec_id, socket=True)
            except docker.errors.APIError as exc:
                raise ClusterError(f"session in {container.name}: {exc.explanation}"
                                   ) from None
        session = _Session(getattr(sock, "_sock", sock))
        self._local.session = session
        with self._sessions_lock:
            self._sessions.append(session)
        return session


class SessionClosed(Exception):
    pass


class _Session:
    """One `python3 -m sim.session` process, spoken to over its exec socket
    (Docker's multiplexed stream: 8-byte frame headers, 1 = stdout)."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.lock = threading.Lock()

    def call(self, argv: Sequence[str], *, user: str | None, stdin: str | None,
             timeout_s: float) -> CommandResult:
        request = {"argv": list(argv), "user": user, "stdin": stdin,
                   "timeout_s": timeout_s}
        with self.lock:
            self.sock.settimeout(timeout_s + 30)
            self.sock.sendall((json.dumps(request) + "\n").encode())
            reply = json.loads(self._line())
        return CommandResult(tuple(argv), reply["exit_code"], reply["stdout"],
                             reply["stderr"])

    def _line(self) -> bytes:
        # Replies can be megabytes (squeue of thousands of jobs): grow one
        # buffer and search only what arrived since the last look.
        searched = 0
        while (end := self.buffer.find(b"\n", searched)) < 0:
            searched = len(self.buffer)
            stream, payload = self._frame()
            if stream == 1:
                self.buffer += payload
            elif payload:
                log.debug("session: %s", payload.decode(errors="replace").strip())
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 1]
        return line

    def _frame(self) -> tuple[int, bytes]:
        header = self._exactly(8)
        return header[0], self._exactly(int.from_bytes(header[4:8], "big"))

    def _exactly(self, size: int) -> bytes:
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            count = self.sock.recv_into(view[got:])
            if not count:
                raise SessionClosed("the session ended")
            got += count
        return bytes(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def wait_until(
    condition: Callable[[], object],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    describe: Callable[[], str] | None = None,
) -> object:
    """Poll `condition` until it returns something truthy, or raise WaitTimeout."""
    deadline = clock() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if clock() >= deadline:
            seen = f"; last seen: {describe()}" if describe else ""
            raise WaitTimeout(f"waited {timeout_s:g}s for {what}{seen}")
        sleep(interval_s)
