"""Slurm host lists: `a100-[01-03,05],cpu-1` <-> individual node names."""

from __future__ import annotations

import re
from itertools import groupby

_RANGE = re.compile(r"([^,\[]*)\[([^\]]+)\]([^,]*)|([^,\[\]]+)")


def compress(names: list[str]) -> str:
    """a100-01,a100-02,a100-03 -> a100-[01-03]; order is kept."""
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


def expand(hostlist: str) -> list[str]:
    """a100-[01-03],cpu-1 -> [a100-01, a100-02, a100-03, cpu-1]."""
    names: list[str] = []
    for match in _RANGE.finditer(hostlist.strip()):
        prefix, inner, suffix, plain = match.groups()
        if plain:
            names.append(plain.strip())
            continue
        for piece in inner.split(","):
            low, _, high = piece.partition("-")
            width = len(low)
            for n in range(int(low), int(high or low) + 1):
                names.append(f"{prefix}{n:0{width}d}{suffix}")
    return names


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
