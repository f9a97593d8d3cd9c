"""The import architecture of cpl: layers, no cycles, and light configuration loading.

Layers, bottom to top (a module may import its own group and groups on LOWER layers only):

    0  cpl.theory | cpl.core | cpl.config   (three independent groups: none imports another)
    1  cpl.callbacks (cpl.core only) | cpl.tracking | cpl.figures
    2  cpl.families (each family a group of its own: matcomp never imports multipath)
    3  cpl.batching | cpl.guard
    4  cpl.run
    5  cpl.plan | cpl.sweep
    6  cpl.bench (times the sweep command users run against a plain loop)
    7  cpl.cli
    8  cpl.reproduce (composes sweeps and reuses cpl.cli's option parsing)

The import graph is read with ``ast`` from every module of the package (function-local imports
included), and importing ``a.b.c`` counts as importing ``a.b`` and ``a`` too, as Python does.
A new top-level module must be placed in :data:`LAYERS` explicitly.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: top-level group -> layer
LAYERS = {
    "cpl.theory": 0,
    "cpl.core": 0,
    "cpl.config": 0,
    "cpl.callbacks": 1,
    "cpl.tracking": 1,
    "cpl.figures": 1,
    "cpl.families": 2,
    "cpl.batching": 3,
    "cpl.guard": 3,
    "cpl.run": 4,
    "cpl.plan": 5,
    "cpl.sweep": 5,
    "cpl.bench": 6,
    "cpl.cli": 7,
    "cpl.reproduce": 8,
}
#: groups that may import only these groups (besides themselves)
ONLY = {"cpl.callbacks": {"cpl.core"}, "cpl.theory": set(), "cpl.core": set(), "cpl.config": set()}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "cpl").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The cpl modules an import statement in ``module`` loads (the package itself for its names)."""
    is_pkg = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "cpl"]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "cpl":
        return []
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return subs or [target]


def _with_parents(name: str, importer: str) -> list[str]:
    """``name`` and the packages Python initialises to import it, except the importer's own
    ancestors (already initialised when the importer runs)."""
    parts = name.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    own = {p for p in parents if importer.startswith(p + ".")}
    return [m for m in [*parents, name] if m in MODULES and (m == name or m not in own)]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node):
                    edges.update(_with_parents(target, module))
        edges.discard(module)
        graph[module] = edges
    return graph


GRAPH = _graph()


def _group(module: str) -> str:
    for group in sorted(LAYERS, key=len, reverse=True):
        if module == group or module.startswith(group + "."):
            if group == "cpl.families" and module.count(".") >= 2:
                return ".".join(module.split(".")[:3])  # each family is its own group
            return group
    return module


def _layer(module: str) -> int | None:
    group = _group(module)
    return LAYERS.get(group, LAYERS.get("cpl.families") if group.startswith("cpl.families.") else None)


def test_every_top_level_module_has_a_layer():
    missing = sorted({m for m in MODULES if m != "cpl" and _layer(m) is None})
    assert not missing, f"place these modules in LAYERS (tests/test_layers.py): {missing}"


def test_imports_go_down_the_layers():
    bad = []
    for module, targets in GRAPH.items():
        if module == "cpl":
            continue
        group, layer = _group(module), _layer(module)
        for target in targets:
            if target == "cpl":  # the lazy package root imports nothing eagerly
                continue
            tgroup, tlayer = _group(target), _layer(target)
            if tgroup == group or (tgroup == "cpl.families" and group.startswith("cpl.families.")):
                continue
            allowed = ONLY.get(group.split(".families.")[0] if ".families." in group else group)
            if tlayer >= layer or (allowed is not None and tgroup not in allowed):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports that go sideways or up:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_violation():
    # the rules above must be able to fail: a synthetic upward edge is caught
    assert _layer("cpl.core.module") < _layer("cpl.run")
    assert "cpl.core.events" in GRAPH["cpl.core.module"] and "cpl.config" in GRAPH["cpl.batching"]
    assert _group("cpl.families.matcomp.module") != _group("cpl.families.multipath.module")


HEAVY = ("torch", "lightning", "matplotlib", "mlflow", "scipy")


@pytest.mark.parametrize(
    "code",
    [
        "import cpl.config",
        "from cpl.config import load_config; load_config('matcomp_rank10to5'); load_config('multipath_depth4_gating')",
    ],
)
def test_loading_and_validating_configs_imports_nothing_heavy(code):
    probe = f"{code}; import sys; print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=SRC.parent)
    assert out.stdout.strip() == "", f"{code!r} imported {out.stdout.strip()}"


#: functions allowed over the limit, with the reason (keep this empty where possible)
LONG_FUNCTIONS: dict[str, str] = {}


def test_files_and_functions_stay_small():
    too_long = []
    for module, path in MODULES.items():
        source = path.read_text()
        if source.count("\n") > 400:
            too_long.append(f"{module}: {source.count(chr(10))} lines (limit 400)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60 and f"{module}.{node.name}" not in LONG_FUNCTIONS:
                    too_long.append(f"{module}.{node.name}: {length} lines (limit 60)")
    assert not too_long, "\n".join(too_long)
