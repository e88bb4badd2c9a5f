"""The architecture the tree shows holds: no import cycles among `modeling/` modules (function-level imports
counted), light layers stay light, and the files stay readable. The layer direction itself is `lint-imports`'s
contract in pyproject.toml, run by the test command."""

import ast
import subprocess
import sys

import grimp
import pytest

from .conftest import REPO


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module (or a module importing itself)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_tarjan_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_modules():
    graph = grimp.build_graph("modeling", include_external_packages=False)
    modules = {m for m in graph.modules if m.startswith("modeling")}
    # A package's __init__ importing its own modules is not a cycle of the code; compare modules only.
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in modules} for m in modules}
    assert strongly_connected(edges) == []


@pytest.mark.parametrize("module", ["modeling", "modeling.evaluation.metrics",
                                   "modeling.retrieval.backends.faiss.index", "modeling.data",
                                   "modeling.data.composed", "modeling.data.queries",
                                   "modeling.retrieval.common.lexical", "modeling.utils.io"])
def test_light_modules_do_not_load_torch(module):
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "print(heavy); raise SystemExit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{module} imports {out.stdout.strip()}"


def _imported_modules(path) -> set[str]:
    """Every module `path` imports, at module level or inside functions (`from a.b import c` counts as `a.b`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_app_imports_serving_never_retrieval():
    """`app.py` (outside the package) and its page (`modeling.ui`) sit above `modeling.serving`: they reach the
    engines only through the serving layer, plus the helpers of the lowest layers where they must."""
    files = [REPO / "app.py", *sorted((REPO / "modeling" / "ui").glob("*.py"))]
    imported = {m for f in files for m in _imported_modules(f) if m == "modeling" or m.startswith("modeling.")}
    assert any(m.startswith("modeling.serving") for m in imported)
    allowed = ("modeling.serving", "modeling.ui", "modeling.data", "modeling.models", "modeling.utils")
    assert sorted(m for m in imported if not m.startswith(allowed)) == []


def test_models_register_where_they_load():
    """`modeling.encoders.loading` registers the Auto classes; `import modeling` alone does not load them."""
    code = ("import sys, modeling; assert 'modeling.models' not in sys.modules; "
            "import modeling.encoders.loading; from transformers import AutoConfig; "
            "AutoConfig.for_model('fashion_dual_encoder')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]



def _lines(path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_files_stay_readable():
    assert _lines(REPO / "train.py") <= 300
    assert _lines(REPO / "evaluate.py") <= 300
    assert _lines(REPO / "README.md") <= 200
    long = {str(p.relative_to(REPO)): _lines(p) for p in (REPO / "modeling").rglob("*.py") if _lines(p) > 600}
    assert long == {}


# Modules and functions of `modeling/` (outside `modeling/models/`, a pushed model's flat remote code) stay under
# these limits, everywhere.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def _oversized(root, skip=()):
    """{module: lines} over MAX_MODULE_LINES and {module:function: lines} over MAX_FUNCTION_LINES below `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = str(path.relative_to(REPO))
        if any(name.startswith(s) for s in skip):
            continue
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found[f"{name}:{node.name}"] = length
    return found


def test_modules_and_functions_stay_small():
    """No module over 500 lines and no function over 80 in `modeling/` outside `modeling/models/`, nor in the
    top-level scripts. The search engine itself stays at most 250 lines."""
    assert _oversized(REPO / "modeling", skip=("modeling/models/",)) == {}
    scripts = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in sorted(REPO.glob("*.py"))}
    assert {name: n for name, n in scripts.items() if n > MAX_MODULE_LINES} == {}
    engine = next(node for node in ast.parse((REPO / "modeling/retrieval/engine/search.py").read_text()).body
                  if isinstance(node, ast.ClassDef) and node.name == "FashionSearchEngine")
    assert engine.end_lineno - engine.lineno + 1 <= 250


def _function_lengths(path) -> dict[str, int]:
    """Lines of every function and method of `path` (nested ones counted on their own too), by qualified name."""
    lengths = {}

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return lengths


def test_app_functions_stay_short():
    """No function of app.py or its page (`modeling.ui`) is longer than 80 lines: one builder per part."""
    lengths = {name: n for f in [REPO / "app.py", *sorted((REPO / "modeling" / "ui").glob("*.py"))]
               for name, n in _function_lengths(f).items()}
    assert "build_demo" in lengths and "Handlers.search_text" in lengths
    assert {name: n for name, n in lengths.items() if n > 80} == {}
