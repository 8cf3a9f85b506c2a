"""The limitations ledger as data: claims, their groups, the vocabulary rules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sim.errors import SpecError
from sim.paths import PROJECT
from sim.specfile import read_yaml, validate

LEDGER = PROJECT / "ledger" / "ledger.yaml"
Group = Literal["fake", "real", "neither"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KitRelation(_Spec):
    checks: str | None = None
    note: str = ""


class Claim(_Spec):
    id: str = Field(pattern=r"^(fake|real|neither)\.[a-z0-9-]+$")
    group: Group
    text: str
    why: str = ""
    kit: KitRelation = KitRelation()


class Vocabulary(_Spec):
    use: tuple[str, ...]
    avoid: str


class Ledger(_Spec):
    claims: tuple[Claim, ...]
    vocabulary: Vocabulary

    def ids(self) -> set[str]:
        return {c.id for c in self.claims}

    def claim(self, claim_id: str) -> Claim:
        return next(c for c in self.claims if c.id == claim_id)

    def group(self, group: Group) -> list[Claim]:
        return [c for c in self.claims if c.group == group]


def load_ledger(path: Path = LEDGER) -> Ledger:
    ledger = validate(Ledger, read_yaml(path), path)
    for i, claim in enumerate(ledger.claims):
        if not claim.id.startswith(f"{claim.group}."):
            raise SpecError(f"{path}: claims[{i}].id: {claim.id!r} must start with "
                            f"its group {claim.group!r}")
        if claim.id in {c.id for c in ledger.claims[:i]}:
            raise SpecError(f"{path}: claims[{i}].id: duplicate id {claim.id!r}")
    return ledger
