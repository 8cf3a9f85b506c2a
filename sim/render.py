"""Rendering: a validated fleet becomes every file Slurm and compose read.

All files are rendered in memory first and then swapped into place at once,
so a failure leaves the previous rendering whole.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from itertools import groupby
from pathlib import Path

import jinja2

from sim.errors import RenderError
from sim.fleet import Fleet
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


def hostlist(names: list[str]) -> str:
    """Slurm's compressed host list: a100-01,a100-02,a100-03 -> a100-[01-03]."""
    parsed = [_split_number(n) for n in names]
    parts: list[str] = []
    for (prefix, width), group in groupby(parsed, key=lambda p: (p[0], p[2])):
        numbers = [n for _, n, _ in group]
        if numbers[0] is None:
            parts.append(prefix)
            continue
        ranges = _ranges(numbers)
        if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
            parts.append(f"{prefix}{ranges[0][0]:0{width}d}")
            continue
        inner = ",".join(
            f"{a:0{width}d}" if a == b else f"{a:0{width}d}-{b:0{width}d}"
            for a, b in ranges
        )
        parts.append(f"{prefix}[{inner}]")
    return ",".join(parts)


def _split_number(name: str) -> tuple[str, int | None, int]:
    match = re.fullmatch(r"(.*?)(\d+)", name)
    if not match:
        return name, None, 0
    return match.group(1), int(match.group(2)), len(match.group(2))


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for n in numbers:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


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
            part.name: hostlist([n.name for n in fleet.nodes() if n.pool.name in part.pools])
            for part in fleet.partitions
        },
        "accounting_tres": ",".join(
            ["gres/gpu"] + [f"gres/gpu:{t}" for t in fleet.gpu_types()]
        ),
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
    """Replace `target` with exactly `files`, all at once or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, text in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        staging.chmod(0o755)
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("rendered %d files into %s", len(files), target)
