"""Where the kit's own files live: the project tree this package sits in."""

import os
from pathlib import Path

PROJECT = Path(os.environ.get("SIM_PROJECT", Path(__file__).resolve().parent.parent))
TEMPLATES = PROJECT / "slurm-conf" / "templates"
FLEETS = PROJECT / "slurm-conf" / "fleets"
DEFAULT_FLEET = FLEETS / "default.yaml"
SCENARIOS = PROJECT / "scenarios"
# Renderings of a chosen fleet go here, outside version control.
STATE = PROJECT / ".sim"
CHOSEN_RENDERING = STATE / "cluster"
