"""`sim lint-claims`: phrasing that overclaims for a fake-mode lab.

Rules are data (ledger/vocabulary.yaml). A line is flagged when a rule
matches a sentence of it that has no negation: naming a limit ("not
measured here", "outside both modes") is what the ledger asks for. The
ledger's own rows are quotations, not claims, so their text is passed over
(a report lists "NCCL collective performance" among what neither mode
supports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from sim.paths import PROJECT
from sim.specfile import read_yaml, validate

VOCABULARY = PROJECT / "ledger" / "vocabulary.yaml"
_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")
# Sentences end at . ! ? ; or a table cell's edge.
_SENTENCE_END = re.compile(r"(?<=[.!?;|])\s+|\s*\|\s*")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    pattern: str
    why: str
    suggestion: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Vocabulary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    negations: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    rule: Rule
    text: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.text!r} {self.rule.why} "
                f"[{self.rule.id}]; instead: {self.rule.suggestion}")


def load_vocabulary(path: Path = VOCABULARY) -> Vocabulary:
    return validate(Vocabulary, read_yaml(path), path)


def lint_text(text: str, path: Path, vocabulary: Vocabulary,
              quotations: list[str] = ()) -> list[Finding]:
    negation = re.compile(vocabulary.negations, re.IGNORECASE)
    rules = [(rule, re.compile(rule.pattern, re.IGNORECASE))
             for rule in vocabulary.rules]
    quoted = _quotation_pattern(quotations)
    findings = []
    for number, line in enumerate(text.splitlines(), 1):
        # An embedded image is data, not prose (base64 can spell "P99").
        line = _DATA_URI.sub(" ", line)
        if quoted:
            line = quoted.sub(" ", line)
        for sentence in _SENTENCE_END.split(line):
            if negation.search(sentence):
                continue
            for rule, pattern in rules:
                match = pattern.search(sentence)
                if match:
                    findings.append(Finding(path, number, rule, match.group(0)))
                    break
    return findings


def _quotation_pattern(quotations: list[str]) -> re.Pattern[str] | None:
    texts = sorted({q for q in quotations if q}, key=len, reverse=True)
    if not texts:
        return None
    return re.compile("|".join(re.escape(t) for t in texts), re.IGNORECASE)


def ledger_quotations() -> list[str]:
    """The ledger's claim texts and reasons, which reports quote."""
    from sim.ledger import load_ledger

    ledger = load_ledger()
    return [text for c in ledger.claims for text in (c.text, c.why)]


def lint_paths(paths: list[Path], vocabulary: Vocabulary | None = None
               ) -> list[Finding]:
    vocabulary = vocabulary or load_vocabulary()
    quotations = ledger_quotations()
    findings = []
    for path in paths:
        files = [path]
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.suffix in (".md", ".txt", ".html"))
        for file in files:
            text = file.read_text(errors="replace")
            findings += lint_text(text, file, vocabulary, quotations)
    return findings
