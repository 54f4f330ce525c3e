"""The package's shape: the paper's pieces (attnrl_mini/algorithm/) import nothing else of the package,
and no modules import each other in a circle. Imports are read from the source (top-level and lazy
ones inside functions alike), so a cycle hidden behind a lazy import is still found."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "attnrl_mini"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The package modules that module `name` imports (a `from pkg import sub` names the submodule)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from .x import y
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t != name}
    return out


GRAPH = {name: _imports(name) for name in MODULES}


def test_the_walk_sees_known_edges():
    # guards the checks below against a walker that finds nothing
    assert "attnrl_mini.algorithm.tree" in GRAPH["attnrl_mini.algorithm.adaptive"]          # relative import
    assert "attnrl_mini.algorithm.fci" in GRAPH["attnrl_mini.trainer"]
    assert "attnrl_mini.run.checkpoint" in GRAPH["attnrl_mini.run.driver"]                    # lazy import
    assert "attnrl_mini.algorithm.fci_triton" in GRAPH["attnrl_mini.algorithm.fci"]           # from pkg import sub


def test_algorithm_depends_on_nothing_else_in_the_package():
    outside = {(m, d) for m, deps in GRAPH.items() if m.startswith("attnrl_mini.algorithm")
               for d in deps if not d.startswith("attnrl_mini.algorithm")}
    assert not outside, f"algorithm/ modules importing the rest of the package: {sorted(outside)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_on_a_hand_made_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(GRAPH) == []
