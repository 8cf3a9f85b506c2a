"""A Slurm cluster with fake GPU GRES on one machine, driven from a fleet spec."""

__version__ = "0.1.0"
