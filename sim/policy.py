"""Accounting policy: who may run, under which QOS, with how many GPUs.

The fleet spec's `policy` section names QOS (priorities, preemption, GPU
limits), accounts (a tree with fairshare and group limits) and which lab
users belong to which accounts. Slurm keeps all of it in slurmdbd, so it is
applied with sacctmgr: `plan` compares what slurmdbd holds with the spec and
lists the sacctmgr commands that close the gap, so applying twice changes
nothing the second time. Accounts and QOS the kit made carry a marker, and
only those are removed when a spec drops them.

    python3 -m sim.policy apply /etc/sim/cluster/fleet.json
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

# The unprivileged users the image creates (containers/slurm/Dockerfile).
LAB_USERS = ("alice", "bob", "carol")
POLICY_NAME = r"^[a-z][a-z0-9_-]*$"
# A limit names a GRES the way --gres does: gpu, gpu:TYPE or shard.
GRES_KEY = re.compile(r"^(gpu(:[a-z0-9][a-z0-9_]*)?|shard)$")
# Written into what the kit creates, so that it removes only its own.
MARK = "sim-kit"
# Slurm's own QOS, there before any policy and never removed.
BUILTIN_QOS = "normal"

Run = Callable[[list[str]], str]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Gres = dict[str, int]


class QosLimits(_Spec):
    """GPU limits of a QOS, each a map of gpu / gpu:TYPE / shard to a count."""

    per_user: Gres = {}      # MaxTRESPerUser: held at once by one user
    per_job: Gres = {}       # MaxTRESPerJob
    per_account: Gres = {}   # MaxTRESPerAccount
    group: Gres = {}         # GrpTRES: all jobs of the QOS together


class AccountLimits(_Spec):
    per_job: Gres = {}       # MaxTRES: one job of the account's users
    group: Gres = {}         # GrpTRES: the account and its sub-accounts together


class Qos(_Spec):
    name: str = Field(pattern=POLICY_NAME, max_length=40)
    description: str = ""
    priority: int = Field(default=0, ge=0, le=1_000_000)
    # QOS whose jobs this one's may preempt; they are requeued, or cancelled.
    preempt: tuple[str, ...] = ()
    preempt_mode: Literal["requeue", "cancel"] = "requeue"
    # Reject at submission a job that exceeds a limit, instead of holding it.
    deny_on_limit: bool = False
    limits: QosLimits = QosLimits()


class Account(_Spec):
    name: str = Field(pattern=POLICY_NAME, max_length=40)
    description: str = ""
    parent: str = "root"
    fairshare: int = Field(default=1, ge=1, le=1_000_000)
    # The QOS its users may ask for; left out, every QOS of the policy.
    qos: tuple[str, ...] | None = None
    default_qos: str = BUILTIN_QOS
    limits: AccountLimits = AccountLimits()


class User(_Spec):
    name: str = Field(pattern=POLICY_NAME, max_length=32)
    # The accounts the user may charge; the first is the default.
    accounts: tuple[str, ...] = Field(min_length=1)


class Policy(_Spec):
    """Left out of a fleet spec: one account `lab` holding every lab user."""

    qos: tuple[Qos, ...] = ()
    accounts: tuple[Account, ...] = (Account(name="lab"),)
    # Left out, every lab user in the first account.
    users: tuple[User, ...] = ()

    @model_validator(mode="after")
    def _everyone(self) -> Policy:
        if not self.users and self.accounts:
            first = (self.accounts[0].name,)
            users = tuple(User(name=u, accounts=first) for u in LAB_USERS)
            object.__setattr__(self, "users", users)
        return self

    def qos_names(self) -> list[str]:
        names = [q.name for q in self.qos]
        return names if BUILTIN_QOS in names else [BUILTIN_QOS, *names]

    def account_qos(self, account: Account) -> list[str]:
        return list(account.qos) if account.qos is not None else self.qos_names()


def problem(policy: Policy, gres_keys: set[str]) -> str | None:
    """Rules that span the policy and the fleet, as `policy.FIELD: why`, or None."""
    for kind, items in (("qos", policy.qos), ("accounts", policy.accounts),
                        ("users", policy.users)):
        names = [item.name for item in items]
        for i, name in enumerate(names):
            if name in names[:i]:
                return f"policy.{kind}[{i}].name: duplicate name {name!r}"
    qos_names = policy.qos_names()
    for i, qos in enumerate(policy.qos):
        for j, other in enumerate(qos.preempt):
            if other == qos.name:
                return (f"policy.qos[{i}].preempt[{j}]: QOS {qos.name!r} cannot "
                        "preempt itself")
            if other not in qos_names:
                return (f"policy.qos[{i}].preempt[{j}]: no QOS named {other!r} "
                        f"(QOS: {', '.join(qos_names)})")
        found = _limit_problem(f"policy.qos[{i}].limits", qos.limits, gres_keys)
        if found:
            return found
    accounts = {a.name: a for a in policy.accounts}
    for i, account in enumerate(policy.accounts):
        where = f"policy.accounts[{i}]"
        if account.name == "root":
            return (f"{where}.name: 'root' is Slurm's own top account; "
                    "choose another name")
        if account.parent != "root" and account.parent not in accounts:
            return (f"{where}.parent: no account named {account.parent!r} "
                    f"(accounts: root, {', '.join(accounts)})")
        for j, name in enumerate(account.qos or ()):
            if name not in qos_names:
                return (f"{where}.qos[{j}]: no QOS named {name!r} "
                        f"(QOS: {', '.join(qos_names)})")
        if account.default_qos not in policy.account_qos(account):
            return (f"{where}.default_qos: {account.default_qos!r} is not among the "
                    f"account's QOS ({', '.join(policy.account_qos(account))})")
        found = _limit_problem(f"{where}.limits", account.limits, gres_keys)
        if found:
            return found
        seen, parent = {account.name}, account.parent
        while parent in accounts:
            if parent in seen:
                return f"{where}.parent: accounts {' -> '.join(seen)} form a loop"
            seen.add(parent)
            parent = accounts[parent].parent
    for i, user in enumerate(policy.users):
        if user.name not in LAB_USERS:
            return (f"policy.users[{i}].name: {user.name!r} is not a user of the "
                    f"cluster (users: {', '.join(LAB_USERS)})")
        for j, name in enumerate(user.accounts):
            if name not in accounts:
                return (f"policy.users[{i}].accounts[{j}]: no account named {name!r} "
                        f"(accounts: {', '.join(accounts)})")
        if len(set(user.accounts)) != len(user.accounts):
            return f"policy.users[{i}].accounts: an account is named twice"
    return None


def _limit_problem(where: str, limits: BaseModel, gres_keys: set[str]) -> str | None:
    allowed = ", ".join(sorted(gres_keys)) or "none: the fleet has no GPUs"
    for kind in type(limits).model_fields:
        for key, count in getattr(limits, kind).items():
            if not GRES_KEY.match(key):
                return (f"{where}.{kind}: {key!r} is not a GRES to limit "
                        f"(allowed: {allowed})")
            if key not in gres_keys:
                return (f"{where}.{kind}: this fleet has no GRES {key!r} "
                        f"(allowed: {allowed})")
            if count < 0:
                return f"{where}.{kind}.{key}: {count} is negative; give 0 or more"
    return None


def tres_name(key: str) -> str:
    return f"gres/{key}"


def tres_text(limits: Gres) -> dict[str, str]:
    return {tres_name(k): str(v) for k, v in sorted(limits.items())}


# What slurmdbd holds, and the commands that make it match a policy.

QOS_FIELDS = {
    # sacctmgr format name -> set name
    "priority": "Priority",
    "preempt": "Preempt",
    "preemptmode": "PreemptMode",
    "flags": "Flags",
    "maxtrespu": "MaxTRESPerUser",
    "maxtres": "MaxTRESPerJob",
    "maxtrespa": "MaxTRESPerAccount",
    "grptres": "GrpTRES",
}
TRES_FIELDS = {"maxtrespu", "maxtres", "maxtrespa", "grptres"}
ASSOC_TRES_FIELDS = {"grptres": "GrpTRES", "maxtres": "MaxTRES"}


@dataclass
class State:
    """The parts of slurmdbd's records a policy governs, for one cluster."""

    cluster_exists: bool = False
    qos: dict[str, dict[str, str]] = field(default_factory=dict)
    qos_descriptions: dict[str, str] = field(default_factory=dict)
    # Account associations: account -> parent, share, grptres, maxtres, qos, defaultqos.
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    kit_accounts: set[str] = field(default_factory=set)
    # User associations: user -> its accounts.
    user_accounts: dict[str, set[str]] = field(default_factory=dict)
    default_account: dict[str, str] = field(default_factory=dict)


def _rows(text: str, fields: int) -> Iterable[list[str]]:
    for line in text.splitlines():
        if line.strip():
            row = line.split("|")
            yield (row + [""] * fields)[:fields]


def read_state(run: Run, cluster: str) -> State:
    state = State()
    state.cluster_exists = bool(run(["show", "cluster", "where", f"name={cluster}",
                                     "format=cluster"]).strip())
    formats = ",".join(["name", "description", *QOS_FIELDS])
    for name, description, *values in _rows(
        run(["show", "qos", f"format={formats}"]), 2 + len(QOS_FIELDS)
    ):
        state.qos[name] = dict(zip(QOS_FIELDS, values, strict=True))
        state.qos_descriptions[name] = description
    for name, org in _rows(run(["show", "account", "format=account,organization"]), 2):
        if org == MARK:
            state.kit_accounts.add(name)
    if not state.cluster_exists:
        return state
    for account, user, parent, share, grptres, maxtres, qos, defqos in _rows(
        run(["show", "association", "where", f"cluster={cluster}",
             "format=account,user,parentname,share,grptres,maxtres,qos,defaultqos"]), 8
    ):
        if user:
            state.user_accounts.setdefault(user, set()).add(account)
        elif account != "root":
            state.accounts[account] = {
                "parent": parent, "share": share, "grptres": grptres,
                "maxtres": maxtres, "qos": qos, "defaultqos": defqos,
            }
    for user, default in _rows(run(["show", "user", "format=user,defaultaccount"]), 2):
        state.default_account[user] = default
    return state


def _tres_map(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def _tres_change(current: str, wanted: dict[str, str]) -> str | None:
    """The value that turns TRES limits `current` into `wanted`, or None."""
    have = _tres_map(current)
    if have == wanted:
        return None
    cleared = {name: "-1" for name in have if name not in wanted}
    return ",".join(f"{k}={v}" for k, v in sorted({**cleared, **wanted}.items()))


def _qos_wanted(qos: Qos) -> dict[str, str | dict[str, str]]:
    return {
        "priority": str(qos.priority),
        "preempt": ",".join(sorted(qos.preempt)),
        "preemptmode": qos.preempt_mode,
        "flags": "DenyOnLimit" if qos.deny_on_limit else "",
        "maxtrespu": tres_text(qos.limits.per_user),
        "maxtres": tres_text(qos.limits.per_job),
        "maxtrespa": tres_text(qos.limits.per_account),
        "grptres": tres_text(qos.limits.group),
    }


def _qos_changes(wanted: dict, have: dict[str, str]) -> list[str]:
    changes = []
    for key, value in wanted.items():
        current = have.get(key, "")
        if key in TRES_FIELDS:
            tres = _tres_change(current, value)
            if tres is not None:
                changes.append(f"{QOS_FIELDS[key]}={tres}")
        elif key == "preempt" and set(filter(None, current.split(","))) != set(
            filter(None, value.split(","))
        ):
            changes.append(f"Preempt={value}")
        elif key == "flags" and current != value:
            changes.append(f"Flags={value or -1}")
        elif key == "preemptmode" and current.lower() != value:
            changes.append(f"PreemptMode={value}")
        elif key == "priority" and current != value:
            changes.append(f"Priority={value}")
    return changes


def _parents_first(accounts: tuple[Account, ...]) -> list[Account]:
    ordered: list[Account] = []
    placed = {"root"}
    pending = list(accounts)
    while pending:
        ready = [a for a in pending if a.parent in placed]
        if not ready:          # a loop; `problem` rejects those before here
            raise ValueError("accounts form a loop")
        for account in ready:
            ordered.append(account)
            placed.add(account.name)
            pending.remove(account)
    return ordered


def plan(policy: Policy, state: State, cluster: str) -> list[list[str]]:
    """The sacctmgr commands (without `sacctmgr -i`) that apply `policy`."""
    commands: list[list[str]] = []
    if not state.cluster_exists:
        commands.append(["add", "cluster", cluster])
    for qos in policy.qos:
        # slurmdbd keeps descriptions in lower case.
        description = f"{MARK}: {qos.description or qos.name}"
        if qos.name not in state.qos:
            commands.append(["add", "qos", qos.name, f"Description={description}"])
        elif (qos.name != BUILTIN_QOS
              and state.qos_descriptions.get(qos.name) != description.lower()):
            commands.append(["modify", "qos", "where", f"name={qos.name}", "set",
                             f"Description={description}"])
        changes = _qos_changes(_qos_wanted(qos), state.qos.get(qos.name, {}))
        if changes:
            commands.append(["modify", "qos", "where", f"name={qos.name}", "set",
                             *changes])
    for account in _parents_first(policy.accounts):
        have = state.accounts.get(account.name)
        if have is None:
            commands.append(["add", "account", account.name, f"cluster={cluster}",
                             f"parent={account.parent}", f"Organization={MARK}",
                             f"Description={account.description or account.name}"])
            have = {"parent": account.parent, "share": "1", "qos": BUILTIN_QOS,
                    "defaultqos": ""}
        changes = []
        if have["parent"] != account.parent:
            changes.append(f"Parent={account.parent}")
        if have["share"] != str(account.fairshare):
            changes.append(f"Fairshare={account.fairshare}")
        for key, name in ASSOC_TRES_FIELDS.items():
            limits = (account.limits.group if key == "grptres"
                      else account.limits.per_job)
            tres = _tres_change(have.get(key, ""), tres_text(limits))
            if tres is not None:
                changes.append(f"{name}={tres}")
        qos = policy.account_qos(account)
        if set(filter(None, have["qos"].split(","))) != set(qos):
            changes.append(f"QOS={','.join(qos)}")
        if have["defaultqos"] != account.default_qos:
            changes.append(f"DefaultQOS={account.default_qos}")
        if changes:
            commands.append(["modify", "account", "where", f"name={account.name}",
                             f"cluster={cluster}", "set", *changes])
    for user in policy.users:
        have_accounts = state.user_accounts.get(user.name, set())
        for account in user.accounts:
            if account not in have_accounts:
                commands.append(["add", "user", user.name, f"account={account}",
                                 f"cluster={cluster}"])
        if state.default_account.get(user.name) != user.accounts[0]:
            commands.append(["modify", "user", "where", f"name={user.name}", "set",
                             f"DefaultAccount={user.accounts[0]}"])
    wanted_users = {u.name: set(u.accounts) for u in policy.users}
    for user in LAB_USERS:
        for account in sorted(state.user_accounts.get(user, set())
                              - wanted_users.get(user, set())):
            commands.append(["delete", "user", "where", f"name={user}",
                             f"account={account}", f"cluster={cluster}"])
    kept = {a.name for a in policy.accounts}
    # Children before parents: deepest accounts first.
    for account in sorted(state.kit_accounts - kept,
                          key=lambda a: -_depth(a, state.accounts)):
        commands.append(["delete", "account", "where", f"name={account}"])
    kept_qos = {q.name for q in policy.qos}
    for name, description in sorted(state.qos_descriptions.items()):
        if name not in kept_qos and name != BUILTIN_QOS and description.startswith(
            MARK
        ):
            commands.append(["delete", "qos", "where", f"name={name}"])
    return commands


def _depth(account: str, accounts: dict[str, dict[str, str]]) -> int:
    depth, seen = 0, set()
    while account in accounts and account not in seen:
        seen.add(account)
        account = accounts[account]["parent"]
        depth += 1
    return depth


def sacctmgr(args: list[str]) -> str:
    done = subprocess.run(["sacctmgr", "-i", "-n", "-P", *args], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        last = message[-1] if message else f"exit code {done.returncode}"
        raise RuntimeError(f"sacctmgr {' '.join(args)}: {last}")
    return done.stdout


def apply(policy: Policy, cluster: str, run: Run = sacctmgr) -> list[list[str]]:
    """Make slurmdbd hold `policy`; returns the commands that were needed."""
    commands = plan(policy, read_state(run, cluster), cluster)
    for command in commands:
        log.info("sacctmgr %s", " ".join(command))
        try:
            run(command)
        except RuntimeError as exc:
            if command[0] != "delete":
                raise
            # An account with running jobs cannot go; it is retried next time.
            log.warning("left in place: %s", exc)
    return commands


def main(argv: list[str]) -> int:
    from sim.fleet import Fleet

    logging.basicConfig(level=logging.INFO, format="policy: %(message)s",
                        stream=sys.stderr)
    if len(argv) != 2 or argv[0] != "apply":
        print("usage: python3 -m sim.policy apply FLEET.json", file=sys.stderr)
        return 2
    fleet = Fleet.model_validate_json(Path(argv[1]).read_text())
    try:
        commands = apply(fleet.policy, fleet.cluster_name)
        left = plan(fleet.policy, read_state(sacctmgr, fleet.cluster_name),
                    fleet.cluster_name)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"policy: error: {exc}", file=sys.stderr)
        return 1
    if left:
        print(f"policy: error: still differs after applying: sacctmgr "
              f"{' '.join(left[0])}", file=sys.stderr)
        return 1
    log.info("fleet %s: %s", fleet.name,
             f"{len(commands)} change(s) applied" if commands else "already applied")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
