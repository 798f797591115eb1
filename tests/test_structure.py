"""The package's shape (issue 19): no import circle, no function over 60 lines.

Every import counts, the ones inside functions too: a lazy import still
closes a circle (targets -> rhv_upload -> v2v -> targets was one)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION_LINES = 60


def _modules():
    mods = {}
    for d, _, files in os.walk(os.path.join(ROOT, "wrapper")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _trees(mods):
    return {m: ast.parse(open(p).read(), p) for m, p in mods.items()}


def import_graph(mods, trees):
    graph = {}
    for m, tree in trees.items():
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.update(node.module + "." + a.name if node.module + "." + a.name in mods
                            else node.module for a in node.names)
        graph[m] = {d for d in deps if d in mods and d not in (m, "wrapper")}
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    mods = _modules()
    assert "wrapper.targets.rhv_upload" in mods and "wrapper.v2v" in mods
    assert cycles(import_graph(mods, _trees(mods))) == []


def test_no_function_over_60_lines():
    long = []
    for m, tree in _trees(_modules()).items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append("%s.%s: %d lines" % (m, node.name, lines))
    assert long == []
