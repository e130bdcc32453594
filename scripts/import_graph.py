"""The import graph of ``probe/`` and ``dashboards/`` read with ``ast`` (nothing imported): cycles, layers, start-up.

Every ``import`` statement counts, at module level and inside functions (an import inside a
function still makes a cycle; it only hides it until the function runs); imports under
``if TYPE_CHECKING:`` do not. ``from x import y`` is an edge to ``x.y`` when that is a module of
ours, else to ``x``. Outside packages are kept by their top-level name (``torch``).

    python scripts/import_graph.py            # print cycles and layer violations; exit 1 if any
    python scripts/import_graph.py --lazy     # also list every import made inside a function

:func:`check` is what ``tests/unit/test_import_graph.py`` runs.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("probe", "dashboards")

# Layers, top to bottom (DESIGN.md "Second wave"): an import may point to its own layer or below, never up.
# The first matching prefix decides; a module matching none is an error of this table.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry", ("probe.cli", "probe.__main__", "probe.experiment", "probe.plan", "dashboards")),
    ("stages", ("probe.compress", "probe.recover", "probe.capture", "probe.analysis", "probe.evaluation",
                "probe.costs")),
    ("runtime", ("probe.runtime",)),
    ("models, knowledge", ("probe.models", "probe.knowledge", "probe.corpus")),
    ("store, settings, errors", ("probe.artifacts", "probe.store", "probe.settings", "probe.config", "probe.errors",
                                 "probe.progress", "probe")),
)
# Stages that run a model but must not depend on training: the inference half is probe.runtime.
NO_RECOVER = ("probe.runtime", "probe.evaluation", "probe.capture", "probe.costs", "probe.knowledge", "probe.models")
# Modules that read artifacts and must start without torch or transformers (module-level imports, transitively).
LIGHT = ("probe.capture.store", "probe.runtime.spec", "dashboards")
HEAVY = ("torch", "transformers")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    lazy: bool  # made inside a function
    line: int


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def targets(self, source: str, lazy: bool = True) -> set[str]:
        return {e.target for e in self.edges if e.source == source and (lazy or not e.lazy)}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def discover(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function (TYPE_CHECKING blocks skipped)."""
    def walk(node: ast.AST, lazy: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    yield from walk(other, lazy)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, lazy
            yield from walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from walk(tree, False)


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """Our module ``name`` (or its closest existing parent), or the top-level name of an outside package."""
    if name.split(".")[0] not in PACKAGES:
        return name.split(".")[0]
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def build(root: Path = ROOT) -> Graph:
    graph = Graph(discover(root))
    for source, path in graph.modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node, lazy in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in graph.modules else base for a in node.names]
            for target in dict.fromkeys(_resolve(t, graph.modules) for t in targets):
                if target != source:
                    graph.edges.append(Edge(source, target, lazy, node.lineno))
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected groups of our modules (every import counts), each as one cycle through its members."""
    nodes = sorted(graph.modules)
    succ = {n: sorted(t for t in graph.targets(n) if t in graph.modules) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan, recursive: our graph is ~100 modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for n in nodes:
        if n not in index:
            visit(n)
    return [_cycle_through(g, succ) for g in sorted(groups)]


def _cycle_through(group: list[str], succ: dict[str, list[str]]) -> list[str]:
    """One closed path from the group's first module back to it (breadth-first, inside the group)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in succ[v]:
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return [*group, start]


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise KeyError(f"{module} is in no layer of scripts/import_graph.py LAYERS: add it")


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def upward_edges(graph: Graph) -> list[Edge]:
    """Imports that point up a layer, or from an inference module into probe.recover."""
    bad = []
    for e in graph.edges:
        if e.target not in graph.modules:
            continue
        if layer_of(e.target) < layer_of(e.source) or (_under(e.source, NO_RECOVER) and _under(e.target,
                                                                                             ("probe.recover",))):
            bad.append(e)
    return bad


def startup_imports(graph: Graph, module: str) -> set[str]:
    """Everything importing ``module`` runs before its functions are called: module-level imports, transitively,
    with each module's parent packages (their ``__init__`` runs first)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        parents = [".".join(v.split(".")[:i]) for i in range(1, v.count(".") + 1)]
        todo += [p for p in parents if p in graph.modules]
        if v in graph.modules:
            todo += graph.targets(v, lazy=False)
    return seen


def heavy_at_startup(graph: Graph) -> dict[str, list[str]]:
    """Light modules (readers of artifacts) whose start-up imports torch or transformers."""
    return {m: sorted(set(HEAVY) & startup_imports(graph, m)) for m in graph.modules
            if _under(m, LIGHT) and set(HEAVY) & startup_imports(graph, m)}


@dataclass
class Report:
    cycles: list[list[str]]
    upward: list[Edge]
    heavy: dict[str, list[str]]
    lazy: list[Edge]

    @property
    def ok(self) -> bool:
        return not (self.cycles or self.upward or self.heavy)


def check(root: Path = ROOT) -> Report:
    graph = build(root)
    lazy = [e for e in graph.edges if e.lazy and e.target in graph.modules]
    return Report(cycles(graph), upward_edges(graph), heavy_at_startup(graph), lazy)


def main(argv: list[str]) -> int:
    report = check()
    for cycle in report.cycles:
        print("cycle: " + " -> ".join(cycle))
    for e in report.upward:
        print(f"upward import: {e.source} -> {e.target} (line {e.line}{', inside a function' if e.lazy else ''})")
    for module, heavy in report.heavy.items():
        print(f"heavy start-up: importing {module} imports {', '.join(heavy)}")
    if "--lazy" in argv:
        for e in report.lazy:
            print(f"import inside a function: {e.source} -> {e.target} (line {e.line})")
    if report.ok:
        print("no cycles, no upward imports, light readers stay light")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
