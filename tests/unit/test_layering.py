"""The package's layers depend downwards only, and no two modules import each other (directly or in a cycle).

Imports are read from the source (module level and inside functions, where the heavy ones live), so a lazy
import that points upwards fails here as well. Layers, lowest first (DESIGN.md, "Layout"):
core (errors, lazy imports, artifacts) <- model loading <- data (manifests, synthetic data) <- runtime
(runtime: backends, metrics, verification, bench harness, reports; calibration arrays) <- training <- passes <- remote /
pipeline <- search (mmdk optimize) <- api <- cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmdeploy_kit

PKG = Path(mmdeploy_kit.__file__).parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("errors", "_lazy", "_quiet", "_progress", "artifacts", "__init__")),
    ("model", ("model",)),
    ("data", ("data.manifest", "data.synth", "data")),
    ("runtime", ("runtime", "data.calib")),
    ("train", ("train", "demo_checkpoint", "demo_fusion")),
    ("passes", ("passes",)),
    ("pipeline", ("pipeline", "remote", "doctor")),
    ("search", ("search",)),
    ("api", ("api",)),
    ("cli", ("cli", "__main__")),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(mod: str) -> int:
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len:
                best, best_len = rank, len(p)
    assert best is not None, f"module {mod} is in no layer: add it to LAYERS in {__file__}"
    return best


def _imports(path: Path, mod: str) -> set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
            names = [target] if node.module else [".".join([*anchor, a.name]) for a in node.names]
            for n in names:
                out.add(n.strip(".") or "__init__")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmdeploy_kit"):
            out.add(node.module.removeprefix("mmdeploy_kit").strip(".") or "__init__")
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        deps = set()
        for imp in _imports(path, mod):
            while imp and imp not in known:  # "from .x import name" where name is not a module
                imp = imp.rpartition(".")[0]
            if imp and imp != mod:
                deps.add(imp)
        graph[mod] = deps
    return graph


def test_no_module_imports_a_higher_layer():
    graph = _graph()
    bad = [f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
           for m, deps in graph.items() for d in deps
           if _layer(d) > _layer(m) and not (m.endswith("__init__") or m == "__init__")]
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    # package __init__ files that only re-export are not edges of a cycle
    graph = {m: {d for d in deps if "." in d or d not in ("__init__",)} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_function_level_imports():
    """The graph includes lazy (function-level) imports, so the checks above can fail on them."""
    graph = _graph()
    assert "pipeline.runner" in graph["api"]          # api imports the runner inside functions
    assert "model.loaders" in graph["runtime.bench_models"]  # the harness loads models inside a function
