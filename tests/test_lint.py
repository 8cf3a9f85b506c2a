"""`sim lint-claims`: overclaiming phrasing is flagged, honest phrasing is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import main
from sim.lint import ledger_quotations, lint_paths, lint_text, load_vocabulary
from sim.paths import PROJECT

DATA = Path(__file__).parent / "data"
OVERCLAIMS = DATA / "overclaims.md"
HONEST = DATA / "honest.md"


def test_every_overclaiming_sentence_is_flagged_with_its_line() -> None:
    lines = OVERCLAIMS.read_text().splitlines()
    findings = lint_paths([OVERCLAIMS])
    assert sorted({f.line for f in findings}) == list(range(1, len(lines) + 1))
    assert all(f.rule.suggestion for f in findings)


def test_honest_sentences_pass() -> None:
    assert [str(f) for f in lint_paths([HONEST])] == []


@pytest.mark.parametrize("sentence, rule", [
    ("We measured NCCL latency between pools.", "nccl"),
    ("Jobs were executed on physical GPUs.", "real-gpu-execution"),
    ("Our production cluster runs this.", "production-experience"),
])
def test_the_rule_that_fires_is_named(sentence: str, rule: str) -> None:
    findings = lint_text(sentence, Path("x.md"), load_vocabulary())
    assert [f.rule.id for f in findings] == [rule]
    assert str(findings[0]).startswith("x.md:1: ")


def test_a_negation_in_another_sentence_does_not_excuse_a_claim() -> None:
    text = "Nothing is simulated of the network. NCCL bandwidth was measured."
    assert [f.rule.id for f in lint_text(text, Path("x.md"), load_vocabulary())] \
        == ["nccl"]


def test_ledger_rows_are_quotations_not_claims() -> None:
    text = "- Production-scale fleet operations (hundreds+ GPUs, multi-tenant SLAs)"
    vocabulary = load_vocabulary()
    assert lint_text(text, Path("x.md"), vocabulary)
    assert not lint_text(text, Path("x.md"), vocabulary, ledger_quotations())


def test_the_kits_own_documents_pass() -> None:
    assert [str(f) for f in lint_paths([PROJECT / "README.md", PROJECT / "ledger"])] \
        == []


def test_the_command_exits_non_zero_on_a_finding(capsys: pytest.CaptureFixture) -> None:
    assert main(["lint-claims", str(OVERCLAIMS)]) == 1
    assert f"{OVERCLAIMS}:1:" in capsys.readouterr().out
    assert main(["lint-claims", str(HONEST)]) == 0
    assert main(["lint-claims", "no/such/file.md"]) == 2


def test_an_embedded_image_is_not_prose() -> None:
    html = '<img src="data:image/png;base64,AAAP99//z3169fnrbfe8nc454To6Gh">'
    assert lint_text(html, Path("r.html"), load_vocabulary()) == []
    assert lint_text("p99 of 120 ms", Path("r.html"), load_vocabulary())
