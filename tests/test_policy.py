"""The accounting policy: how a fleet spec's policy is validated, and the
sacctmgr commands that apply it, planned against slurmdbd's real answers
(tests/data/slurm-24.11/sacctmgr-policy-applied.txt, captured on a cluster of
the default fleet after its policy was applied)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_fleet import load, refusal, write

from sim.fleet import Fleet
from sim.policy import LAB_USERS, Policy, plan, read_state

DATA = Path(__file__).parent / "data" / "slurm-24.11"
DEFAULT = Path(__file__).resolve().parents[1] / "slurm-conf" / "fleets" / "default.yaml"

FLEET = """name: t
pools:
  - {name: a100, nodes: 1, cpus: 16, memory_mb: 64000,
     gpu: {type: a100, count: 4, shards_per_gpu: 2}}
  - {name: cpu, nodes: 1, cpus: 8, memory_mb: 16000}
partitions: [{name: gpu, pools: [a100, cpu]}]
"""


def with_policy(policy: str) -> str:
    return FLEET + "policy:\n" + "".join(f"  {line}\n" for line in policy.splitlines())


def bad(case: str, policy: str, field: str, *fragments: str) -> object:
    return pytest.param(policy, field, fragments, id=case)


BAD_POLICIES = [
    bad("user-in-undefined-account",
        "accounts: [{name: lab}]\nusers: [{name: alice, accounts: [lab, physics]}]",
        "policy.users[0].accounts[1]", "no account named 'physics'", "accounts: lab"),
    bad("user-not-on-the-cluster",
        "accounts: [{name: lab}]\nusers: [{name: dave, accounts: [lab]}]",
        "policy.users[0].name", "'dave' is not a user", "alice, bob, carol"),
    bad("user-without-accounts",
        "accounts: [{name: lab}]\nusers: [{name: alice, accounts: []}]",
        "policy.users[0].accounts", "at least 1"),
    bad("limit-on-unknown-gpu-type",
        "qos: [{name: capped, limits: {per_user: {'gpu:v100': 2}}}]",
        "policy.qos[0].limits.per_user", "no GRES 'gpu:v100'",
        "gpu, gpu:a100, shard"),
    bad("limit-on-something-else",
        "qos: [{name: capped, limits: {per_job: {cpu: 2}}}]",
        "policy.qos[0].limits.per_job", "'cpu' is not a GRES to limit"),
    bad("negative-limit",
        "accounts: [{name: lab, limits: {group: {gpu: -1}}}]",
        "policy.accounts[0].limits.group.gpu", "-1 is negative"),
    bad("unknown-limit-kind",
        "qos: [{name: capped, limits: {per_node: {gpu: 2}}}]",
        "policy.qos[0].limits.per_node", "unknown key", "per_user, per_job"),
    bad("qos-preempting-itself",
        "qos: [{name: high, preempt: [high]}]",
        "policy.qos[0].preempt[0]", "QOS 'high' cannot preempt itself"),
    bad("qos-preempting-unknown",
        "qos: [{name: high, preempt: [low]}]",
        "policy.qos[0].preempt[0]", "no QOS named 'low'", "QOS: normal, high"),
    bad("duplicate-qos",
        "qos: [{name: high}, {name: high}]",
        "policy.qos[1].name", "duplicate name 'high'"),
    bad("account-with-unknown-parent",
        "accounts: [{name: lab, parent: physics}]",
        "policy.accounts[0].parent", "no account named 'physics'"),
    bad("accounts-in-a-loop",
        "accounts: [{name: a, parent: b}, {name: b, parent: a}]",
        "policy.accounts[0].parent", "form a loop"),
    bad("account-named-root",
        "accounts: [{name: root}]",
        "policy.accounts[0].name", "Slurm's own top account"),
    bad("account-qos-unknown",
        "accounts: [{name: lab, qos: [normal, gold]}]",
        "policy.accounts[0].qos[1]", "no QOS named 'gold'"),
    bad("default-qos-not-allowed",
        "qos: [{name: high}]\n"
        "accounts: [{name: lab, qos: [normal], default_qos: high}]",
        "policy.accounts[0].default_qos", "'high' is not among the account's QOS"),
    bad("bad-preempt-mode",
        "qos: [{name: high, preempt_mode: suspend}]",
        "policy.qos[0].preempt_mode", "'requeue' or 'cancel'"),
]


@pytest.mark.parametrize(("policy", "field", "fragments"), BAD_POLICIES)
def test_bad_policy_is_refused_in_one_line(
    tmp_path: Path, policy: str, field: str, fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, with_policy(policy))

    message = refusal(path)

    assert message.startswith(f"{path}: {field}"), message
    for fragment in fragments:
        assert fragment in message, message


def test_shard_limit_needs_a_fleet_with_shards(tmp_path: Path) -> None:
    text = with_policy("qos: [{name: q, limits: {per_user: {shard: 2}}}]")

    assert load(tmp_path, text).policy.qos[0].limits.per_user == {"shard": 2}
    path = write(tmp_path, text.replace(", shards_per_gpu: 2", ""))
    assert "no GRES 'shard'" in refusal(path)


def test_policy_left_out_puts_every_lab_user_in_one_account(tmp_path: Path) -> None:
    policy = load(tmp_path, FLEET).policy

    assert [a.name for a in policy.accounts] == ["lab"]
    assert [(u.name, u.accounts) for u in policy.users] == [
        (user, ("lab",)) for user in LAB_USERS
    ]
    assert policy.qos_names() == ["normal"]


def captured(name: str) -> dict[str, str]:
    """A capture of `sacctmgr -n -P show ...` answers, by their arguments."""
    sections: dict[str, str] = {}
    for block in (DATA / name).read_text().split("== ")[1:]:
        query, _, answer = block.partition("\n")
        sections[query.strip()] = answer
    return sections


def replay(name: str):
    answers = captured(name)
    asked: list[list[str]] = []

    def run(args: list[str]) -> str:
        asked.append(args)
        query = " ".join(args)
        if "absent" in query:      # a cluster slurmdbd has never seen
            return ""
        for known, answer in answers.items():
            if known.split(" format=")[0] == query.split(" format=")[0]:
                return answer
        raise AssertionError(f"no captured answer to: sacctmgr {query}")

    return run, asked


def default_fleet() -> Fleet:
    from sim.fleet import load_fleet

    return load_fleet(DEFAULT)


def test_applied_policy_needs_no_command() -> None:
    run, _ = replay("sacctmgr-policy-applied.txt")
    fleet = default_fleet()

    state = read_state(run, "gpusim")

    assert plan(fleet.policy, state, "gpusim") == []
    assert state.kit_accounts == {"lab", "vision", "teams", "team-a", "team-b"}
    assert state.user_accounts["alice"] == {"lab", "vision", "team-a"}
    assert state.qos["capped"]["maxtrespu"] == "gres/gpu=4"


def test_unknown_cluster_gets_added_with_its_associations() -> None:
    run, _ = replay("sacctmgr-policy-applied.txt")
    fleet = default_fleet()

    commands = plan(fleet.policy, read_state(run, "absent"), "absent")

    assert commands[0] == ["add", "cluster", "absent"]
    added = [c for c in commands if c[:2] == ["add", "account"]]
    # Parents before children.
    names = [c[2] for c in added]
    assert names.index("teams") < names.index("team-a")
    assert ["add", "user", "carol", "account=lab", "cluster=absent"] in commands
    assert not [c for c in commands if c[0] == "delete"]


def test_changed_policy_changes_only_what_differs() -> None:
    run, _ = replay("sacctmgr-policy-applied.txt")
    fleet = default_fleet()
    qos = [q.model_copy(update={"limits": q.limits.model_copy(
        update={"per_user": {"gpu": 2}, "per_job": {}})}) if q.name == "capped" else q
        for q in fleet.policy.qos if q.name != "strict"]
    accounts = [a for a in fleet.policy.accounts if a.name != "vision"]
    users = [u.model_copy(update={"accounts": tuple(
        a for a in u.accounts if a != "vision")}) for u in fleet.policy.users]
    changed = Policy(qos=tuple(qos), accounts=tuple(accounts), users=tuple(users))

    commands = plan(changed, read_state(run, "gpusim"), "gpusim")

    assert ["modify", "qos", "where", "name=capped", "set",
            "MaxTRESPerUser=gres/gpu=2", "MaxTRESPerJob=gres/gpu=-1"] in commands
    assert ["delete", "user", "where", "name=alice", "account=vision",
            "cluster=gpusim"] in commands
    assert ["delete", "account", "where", "name=vision"] in commands
    assert ["delete", "qos", "where", "name=strict"] in commands
    # Accounts that offered every QOS now offer every QOS but strict.
    offers = [c for c in commands if c[:2] == ["modify", "account"]]
    assert sorted(c[3] for c in offers) == [
        "name=lab", "name=team-a", "name=team-b", "name=teams"]
    assert {tuple(c[-2:]) for c in offers} == {("set", "QOS=normal,low,high,capped")}
    # Everything else already matches: no other command.
    assert len(commands) == 5 + len(offers), commands
    # Users lose the account before the account goes.
    assert commands.index(["delete", "account", "where", "name=vision"]) > max(
        i for i, c in enumerate(commands) if c[:2] == ["delete", "user"])


def test_qos_slurm_made_is_never_removed() -> None:
    run, _ = replay("sacctmgr-policy-applied.txt")

    commands = plan(Policy(), read_state(run, "gpusim"), "gpusim")

    assert ["delete", "qos", "where", "name=normal"] not in commands
    assert {c[-1] for c in commands if c[:2] == ["delete", "qos"]} == {
        "name=low", "name=high", "name=capped", "name=strict"}
