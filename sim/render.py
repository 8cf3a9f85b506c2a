"""Rendering: a validated fleet becomes every file Slurm and compose read.

All files are rendered in memory first and then swapped into place at once,
so a failure leaves the previous rendering whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jinja2

from sim.errors import RenderError
from sim.fleet import Fleet
from sim.hostlist import compress
from sim.paths import TEMPLATES

log = logging.getLogger(__name__)

# The character-device major of NVIDIA GPUs: with no driver behind it, opening
# a fake device fails, which is what a GPU-less machine really shows.
GPU_MAJOR = 195
DEVICE_ROOT = "/dev/fakegpu"

# Files rendered once per fleet: output name -> template.
FLEET_FILES = {
    "slurm.conf": "slurm.conf.j2",
    "gres.conf": "gres.conf.j2",
    "cgroup.conf": "cgroup.conf.j2",
    "slurmdbd.conf": "slurmdbd.conf.j2",
    "nodes.compose.yaml": "nodes.compose.yaml.j2",
    "nodes.list": "nodes.list.j2",
}


def device_path(node: str, index: int) -> str:
    return f"{DEVICE_ROOT}/{node}/nvidia{index}"


def _environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals.update(device_path=device_path, gpu_major=GPU_MAJOR)
    return env


def render_fleet(fleet: Fleet, templates: Path = TEMPLATES) -> dict[str, str]:
    """Every rendered file of `fleet`, as relative path -> text."""
    env = _environment(templates)
    hosts = fleet.hosts()
    context = {
        "fleet": fleet,
        "hosts": hosts,
        "nodes": fleet.nodes(),
        "partition_nodes": {
            part.name: compress(
                [n.name for n in fleet.nodes() if n.pool.name in part.pools]
            )
            for part in fleet.partitions
        },
        "accounting_tres": ",".join(fleet.accounting_tres()),
    }
    try:
        files = {
            name: env.get_template(template).render(context)
            for name, template in FLEET_FILES.items()
        }
        manifest = env.get_template("host.manifest.j2")
        for host in hosts:
            files[f"hosts/{host.name}.manifest"] = manifest.render(context, host=host)
    except jinja2.TemplateError as exc:
        raise RenderError(f"rendering fleet {fleet.name!r}: {exc}") from exc
    files["fleet.json"] = json.dumps(fleet.model_dump(mode="json"), indent=2) + "\n"
    return files


def write_rendering(files: dict[str, str], target: Path) -> None:
    """Make `target` hold exactly `files`, without a half-written state.

    Running containers bind-mount `target`, so the folder itself is kept (a
    new folder in its place would be invisible to them). Every file is staged
    first; only when all are written does each replace its old version, and
    files of the previous rendering that are no longer rendered go.
    """
    target.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, text in files.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            staged.append((temporary, path))
            temporary.write_text(text)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, path in staged:
        temporary.replace(path)
    for path in sorted(target.rglob("*"), reverse=True):
        relative = path.relative_to(target).as_posix()
        if path.is_file() and relative not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    log.info("rendered %d files into %s", len(files), target)
