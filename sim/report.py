"""Reports of a scenario run: JSON, JUnit XML, Markdown, HTML and a timeline.

`write_reports` puts one run's reports into one folder: run.json (the
results and the ledger verdicts), report.md for a lab notebook, a
self-contained report.html and timeline.png, the GPU allocation of every
job per node and GPU index over the run.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jinja2

from sim.expect import FAILED, NOT_RUN, PASSED
from sim.runner import ScenarioResult
from sim.verdicts import Verdict

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class RunInfo:
    """What the run was made against: shown at the top of every report."""

    started_at: str
    target: str
    mode: str
    slurm_version: str
    fleet: str
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_document(results: list[ScenarioResult], verdicts: list[Verdict] | None = None,
                 run: RunInfo | None = None) -> dict[str, Any]:
    """The run as one JSON document: `{"scenarios": [...], "claims": [...]}`."""
    document: dict[str, Any] = {}
    if run:
        document["run"] = run.as_dict()
    document["scenarios"] = [r.as_dict() for r in results]
    if verdicts is not None:
        document["claims"] = [v.as_dict() for v in verdicts]
    return document


def write_json(document: dict[str, Any], path: Path) -> None:
    _write(path, json.dumps(document, indent=2, default=str) + "\n")


def junit_xml(results: list[ScenarioResult]) -> str:
    suite = ET.Element("testsuite", name="gpusim scenarios", tests=str(len(results)),
                       failures=str(sum(r.status == FAILED for r in results)),
                       skipped=str(sum(r.status == NOT_RUN for r in results)),
                       time=f"{sum(r.duration_s for r in results):.2f}")
    for result in results:
        case = ET.SubElement(suite, "testcase", classname="scenarios",
                             name=result.name, time=f"{result.duration_s:.2f}")
        if result.status == NOT_RUN:
            ET.SubElement(case, "skipped", message=result.reason)
        elif result.status == FAILED:
            failed = [e for e in result.expectations if not e.passed]
            failure = ET.SubElement(case, "failure",
                                    message=failed[0].text if failed else result.reason)
            failure.text = "\n".join(
                f"{e.text}: expected {e.expected!r}, observed {e.observed!r}"
                for e in failed)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(
            [f"claims: {', '.join(result.claims)}"]
            + [f"{e.status}: {e.text} (observed: {e.observed})"
               for e in result.expectations])
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(results: list[ScenarioResult], path: Path) -> None:
    _write(path, junit_xml(results))


def write_reports(folder: Path, results: list[ScenarioResult], verdicts: list[Verdict],
                  run: RunInfo, gpu_rows: list[tuple[str, int]] | None = None
                  ) -> list[Path]:
    """Every report of one run into `folder`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    timeline = folder / "timeline.png"
    draw_timeline(results, timeline, gpu_rows)
    context = {
        "run": run, "results": results, "verdicts": verdicts,
        "counts": {s: sum(r.status == s for r in results)
                   for s in (PASSED, FAILED, NOT_RUN)},
        "timeline": timeline.name,
        "timeline_png": base64.b64encode(timeline.read_bytes()).decode(),
    }
    env = _environment()
    written = [timeline]
    for name, template in (("report.md", "report.md.j2"),
                           ("report.html", "report.html.j2")):
        _write(folder / name, env.get_template(template).render(context))
        written.append(folder / name)
    write_json(run_document(results, verdicts, run), folder / "run.json")
    write_junit(results, folder / "junit.xml")
    return written + [folder / "run.json", folder / "junit.xml"]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=jinja2.select_autoescape(["html"]))
    env.filters.update(md=_markdown_cell, gpus=_gpu_text, clock=_clock)
    return env


def _markdown_cell(value: Any) -> str:
    """A value as one Markdown table cell: no pipes, no line breaks."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _gpu_text(gpus: list[dict[str, Any]]) -> str:
    return "; ".join(f"{g['count']} {g['type']} on {g['node']} ({g['indices']})"
                     for g in gpus) or "-"


def _clock(value: str | None) -> str:
    return datetime.fromisoformat(value).strftime("%H:%M:%S") if value else "-"


def draw_timeline(results: list[ScenarioResult], path: Path,
                  gpu_rows: list[tuple[str, int]] | None = None) -> None:
    """Each job's GPUs as bars over time, one row per node and GPU index."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    bars = list(timeline_bars(results))
    rows = sorted({(b["node"], b["index"]) for b in bars} | set(gpu_rows or []))
    figure, axes = plt.subplots(figsize=(12, max(2.5, 0.32 * len(rows) + 1.4)))
    if not bars:
        axes.text(0.5, 0.5, "no job held a GPU in this run", ha="center", va="center",
                  transform=axes.transAxes)
    position = {row: i for i, row in enumerate(rows)}
    colours = plt.get_cmap("tab10")
    scenarios = list(dict.fromkeys(b["scenario"] for b in bars))
    for bar in bars:
        y = position[(bar["node"], bar["index"])]
        colour = colours(scenarios.index(bar["scenario"]) % 10)
        axes.barh(y, bar["width"], left=bar["start"], height=0.8, color=colour,
                  edgecolor="black", linewidth=0.4)
        axes.text(bar["start"] + bar["width"] / 2, y, bar["job"], ha="center",
                  va="center", fontsize=6, clip_on=True)
    axes.set_yticks(range(len(rows)), [f"{node} gpu{index}" for node, index in rows],
                    fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first job started "
                    "(Slurm's own start and end times)")
    axes.set_title("GPU allocation per node and GPU index")
    for i, name in enumerate(scenarios):
        axes.bar(0, 0, color=colours(i % 10), label=name)
    if scenarios:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def timeline_bars(results: list[ScenarioResult]):  # noqa: ANN202 - a generator of dicts
    spans = []
    for result in results:
        for job in result.jobs:
            if not job.gpus or not job.start_time:
                continue
            start = datetime.fromisoformat(job.start_time)
            end = datetime.fromisoformat(job.end_time) if job.end_time else None
            spans.append((result.name, job, start, end))
    if not spans:
        return
    origin = min(start for _, _, start, _ in spans)
    last = max(max(start, end or start) for _, _, start, end in spans)
    for scenario, job, start, end in spans:
        # A job still running when the run ended is drawn to the run's end.
        width = max(((end or last) - start).total_seconds(), 0.6)
        for gpu in job.gpus:
            for index in gpu["indices"]:
                yield {"scenario": scenario, "job": job.name, "node": gpu["node"],
                       "index": index, "start": (start - origin).total_seconds(),
                       "width": width}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
