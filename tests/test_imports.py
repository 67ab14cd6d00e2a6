"""The import rules of docs/architecture.md, read from the source (every import, at module level or inside a
function): each part imports only the parts below it, and no two modules import each other, directly or around a
loop."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "findistill"
CORE = "core"  # the flat modules: config, errors, io, distributed (cli and __main__ are the top: see TOP)
TOP = {"cli", "__main__", "__init__"}
ALLOWED = {  # part -> the parts it may import (itself and the core always)
    "models": set(),
    "evaluation": {"models"},
    "teachers": {"models"},
    "data": {"models", "teachers"},
    "training": {"models", "evaluation", "teachers", "data"},
    "deploy": {"models", "evaluation", "data"},
    "analysis": {"models", "evaluation", "data", "deploy"},
    "pipeline": {"models", "evaluation", "teachers", "data", "training", "deploy", "analysis"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(["findistill", *parts])


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return parts[1] if parts[1] in TOP else CORE


def imports_of(path: Path) -> set[str]:
    """The findistill modules ``path`` imports (``from findistill.x import y`` counts y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("findistill")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("findistill") and not node.level:
            found.add(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if (PACKAGE / Path(*sub.split(".")[1:])).with_suffix(".py").is_file() or \
                        (PACKAGE / Path(*sub.split(".")[1:])).is_dir():
                    found.add(sub)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_each_part_imports_only_the_parts_below_it():
    bad = []
    for module, targets in graph().items():
        part = part_of(module)
        if part in TOP:
            continue
        allowed = {part, CORE} | (ALLOWED.get(part, set()) if part != CORE else set())
        for target in sorted(targets):
            if target == "findistill":
                bad.append(f"{module} imports the package root (import the module that defines the name)")
            elif part_of(target) not in allowed:
                bad.append(f"{module} ({part}) imports {target} ({part_of(target)})")
    assert not bad, "forbidden imports (docs/architecture.md):\n" + "\n".join(bad)


def test_no_import_cycles():
    full = graph()
    g = {m: {t for t in ts if t in full} for m, ts in full.items()}
    # a package's __init__ re-exporting its own modules is not a loop through them
    for m in g:
        g[m] = {t for t in g[m] if not (m == t.rsplit(".", 1)[0] or t == m)}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w.startswith(v + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_rules_catch_a_forbidden_import(tmp_path, monkeypatch):
    """The check itself can fail: a teacher module that imports training is reported."""
    fake = tmp_path / "findistill"
    (fake / "teachers").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "training" / "trainer.py").write_text("")
    (fake / "teachers" / "bad.py").write_text("from findistill.training.trainer import x\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    try:
        test_each_part_imports_only_the_parts_below_it()
    except AssertionError as err:
        assert "findistill.teachers.bad (teachers) imports findistill.training.trainer (training)" in str(err)
    else:
        raise AssertionError("a teacher importing training was not reported")
