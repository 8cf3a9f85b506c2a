"""The package's exceptions: one tree, so the command line can catch them all."""


class SimError(Exception):
    """Base of every error the kit raises on purpose."""


class SpecError(SimError):
    """A fleet spec (or another input file) is invalid; the message is one line."""


class RenderError(SimError):
    """The templates could not be rendered from a valid fleet."""


class ClusterError(SimError):
    """The cluster could not be reached, started or controlled."""


class CommandError(ClusterError):
    """A command run in the cluster failed; carries what is needed to see why."""

    def __init__(self, argv: list[str], exit_code: int, stdout: str, stderr: str):
        self.argv = argv
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip().splitlines()
        tail = detail[-1] if detail else "no output"
        super().__init__(f"{' '.join(argv)!r} exited {exit_code}: {tail}")


class WaitTimeout(ClusterError):
    """A condition did not hold before its deadline."""
