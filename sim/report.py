"""Reports of a scenario run: JSON and JUnit XML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from sim.expect import FAILED, NOT_RUN
from sim.runner import ScenarioResult


def run_document(results: list[ScenarioResult], **extra: Any) -> dict[str, Any]:
    """The run as one JSON-ready document: `{"scenarios": [...], ...}`."""
    return {"scenarios": [r.as_dict() for r in results], **extra}


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


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
