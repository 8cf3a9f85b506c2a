"""A command session: one long-lived process in the login container that runs
Slurm's commands for the kit.

Each `docker exec` costs a round of Docker API calls (about 150 ms on a
two-core machine) before the command itself starts; squeue takes a fraction
of that. The kit therefore starts this module once per thread with
`docker exec -i login python3 -m sim.session` and sends it one JSON request
per line: {"argv", "user", "stdin", "timeout_s"}. It answers each with one
line: {"exit_code", "stdout", "stderr"}. Commands run as `LocalTransport`
runs them on a login node: as the user, from the user's home.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import IO

from sim.errors import SimError
from sim.slurm import LocalTransport


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer requests until the kit closes the session (end of input)."""
    transport = LocalTransport()
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        timeout_s = request.get("timeout_s") or 60
        try:
            done = transport.run(request["argv"], user=request.get("user"),
                                 stdin=request.get("stdin"), timeout_s=timeout_s)
            reply = {"exit_code": done.exit_code, "stdout": done.stdout,
                     "stderr": done.stderr}
        except subprocess.TimeoutExpired:
            reply = {"exit_code": 124, "stdout": "",
                     "stderr": f"timed out after {timeout_s}s"}
        except SimError as exc:
            reply = {"exit_code": 127, "stdout": "", "stderr": str(exc)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
