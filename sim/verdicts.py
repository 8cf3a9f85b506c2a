"""Verdicts: what a run of scenarios shows about each claim of the ledger.

Computed from the run, never written in: a fake-mode claim is supported when
at least one scenario evidencing it ran and every one that ran passed; it
failed when one failed; it has no evidence when none ran. A claim only real
GPUs can support is not provable here, with what it requires and what the
boundary controls observed. A claim neither mode supports is stated as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.expect import FAILED, NOT_RUN, PASSED
from sim.ledger import Claim, Ledger
from sim.runner import ScenarioResult

SUPPORTED = "supported"
NO_EVIDENCE = "no_evidence"
NOT_PROVABLE_HERE = "not_provable_here"
NEITHER_MODE = "neither_mode"
VERDICTS = (SUPPORTED, FAILED, NO_EVIDENCE, NOT_PROVABLE_HERE, NEITHER_MODE)


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    scenarios: list[str] = field(default_factory=list)
    explanation: str = ""
    # For REAL-only claims: what boundary controls observed in this mode.
    observations: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.claim.id, "group": self.claim.group, "text": self.claim.text,
            "verdict": self.verdict, "scenarios": self.scenarios,
            "explanation": self.explanation,
            "kit_checks": self.claim.kit.checks,
            **({"requires": self.claim.why} if self.claim.group == "real" else {}),
            **({"observations": self.observations} if self.observations else {}),
        }


def verdicts(ledger: Ledger, results: list[ScenarioResult], *,
             mode: str = "fake") -> list[Verdict]:
    """One verdict per ledger claim, in the ledger's order."""
    return [_verdict(claim, [r for r in results if claim.id in r.claims], mode)
            for claim in ledger.claims]


def _verdict(claim: Claim, evidence: list[ScenarioResult], mode: str) -> Verdict:
    names = [r.name for r in evidence]
    ran = [r for r in evidence if r.status != NOT_RUN]
    if claim.group == "neither":
        return Verdict(claim, NEITHER_MODE, names,
                       "no mode of this lab supports it, fake or real")
    if claim.group == "real" and mode == "fake":
        return _not_provable(claim, names, ran)
    if claim.group == "real":
        return _real_check(claim, names, ran)
    failed = [r.name for r in ran if r.status == FAILED]
    if failed:
        return Verdict(claim, FAILED, names, f"failed in: {', '.join(failed)}")
    if ran:
        passed = [r.name for r in ran if r.status == PASSED]
        return Verdict(claim, SUPPORTED, names,
                       f"{len(passed)} scenario(s) evidencing it passed")
    return Verdict(claim, NO_EVIDENCE, names, _why_no_evidence(claim, evidence))


def _why_no_evidence(claim: Claim, evidence: list[ScenarioResult]) -> str:
    if claim.kit.checks is None:
        return f"not exercised by this kit: {claim.kit.note or 'no scenario for it'}"
    if evidence:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in evidence)
        return f"no scenario evidencing it ran ({reasons})"
    return "no scenario evidencing it was in this run"


def _not_provable(claim: Claim, names: list[str], ran: list[ScenarioResult]
                  ) -> Verdict:
    observations = [dict(o, scenario=r.name) for r in ran for o in r.observations]
    if observations:
        said = "; ".join(o["finding"] for o in observations)
        explanation = f"requires {claim.why}; the boundary controls observed: {said}"
    elif claim.kit.checks is None:
        explanation = f"requires {claim.why}; not exercised by this kit"
    else:
        explanation = f"requires {claim.why}; no boundary control ran in this run"
    return Verdict(claim, NOT_PROVABLE_HERE, names, explanation, observations)


def _real_check(claim: Claim, names: list[str], ran: list[ScenarioResult]) -> Verdict:
    """On a real cluster: supported only when every real check saw a real GPU
    answer and the job kept from the GPUs it was not given."""
    observations = [dict(o, scenario=r.name) for r in ran for o in r.observations]
    if not ran or not observations:
        why = ("not exercised by this kit" if claim.kit.checks is None
               else "no real check ran in this run")
        return Verdict(claim, NO_EVIDENCE, names, why)
    failed = [r.name for r in ran if r.status == FAILED]
    access = [o for o in observations if o["control"] == "device-access"]
    driver = [o for o in observations if o["control"] == "gpu-driver"]
    share = [o for o in observations if o["control"] == "share-limit"]
    enforced = bool(access) and all(o["enforcement_observed"] for o in access + share)
    answered = bool(driver) and all(o["observed"].get("driver") for o in driver)
    said = "; ".join(o["finding"] for o in observations)
    if failed or not (enforced and answered):
        return Verdict(claim, FAILED, names, f"the real checks observed: {said}",
                       observations)
    return Verdict(claim, SUPPORTED, names, f"the real checks observed: {said}",
                   observations)
