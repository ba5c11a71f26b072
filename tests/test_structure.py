"""The package's import structure: imports run down the layers only, no circles between units, no private names across
units (the same rules as ../shared/tools/structure_check.py, plus the floors of the README's package map)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avflow"

# Unit (subpackage or top-level module of avflow) -> floor; a unit imports only from lower floors.
FLOORS = {
    "cli": 5, "__main__": 5, "commands": 5, "ui": 5,
    "experiments": 4,
    "pipelines": 3, "train": 3,
    "models": 2, "eval": 2, "encoders": 2, "codecs": 2,
    "nn": 1, "data": 1, "world": 1,
    "flow": 0,
    "hub": -1,  # the ground floor: the weight cache, then file helpers and configs, then errors
    "weights": -2, "config": -2, "precision": -2, "heap": -2, "threads": -2,
    "errors": -3, "__init__": -3,
}  # fmt: skip
SIDEWAYS = {("commands", "ui"), ("world", "data")}  # same-floor imports that are allowed (the CLI starts the UI)


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, list[str], str]]:
    """(importing unit, imported unit, imported names, where) for every `avflow.` import between units."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = unit(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("avflow."):
                targets = [(node.module, [a.name for a in node.names])]
            elif isinstance(node, ast.Import):
                targets = [(a.name, []) for a in node.names if a.name.startswith("avflow.")]
            else:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            for module, names in targets:
                if unit(module) != me:
                    found.append((me, unit(module), names, f"{where} {module}"))
    return found


def test_every_unit_has_a_floor():
    units = {unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    missing = units - set(FLOORS)
    assert not missing, f"give these units a floor (and a row in the README's package map): {missing}"


def test_imports_run_down_the_layers():
    wrong = [
        where
        for me, other, _, where in imports()
        if FLOORS[other] > FLOORS[me] or (FLOORS[other] == FLOORS[me] and (me, other) not in SIDEWAYS)
    ]
    assert not wrong, "imports that run up (or sideways across) a layer:\n" + "\n".join(wrong)


def test_no_circles_and_no_private_names_across_units():
    edges: dict[str, set[str]] = {}
    private = []
    for me, other, names, where in imports():
        edges.setdefault(me, set()).add(other)
        private += [f"{where}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private, "private names imported across units:\n" + "\n".join(private)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    circles = sorted(u for u in edges if reaches(u, u, set()))
    assert not circles, f"units on an import circle: {circles}"
