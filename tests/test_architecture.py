"""The package's architecture, measured from its source (issue #23's "done when").

* the import-linter contract in pyproject.toml (layers: lower never imports higher) holds;
* no import circle between lovr_hf modules, counting imports inside functions (ast, nothing run);
* no module over 500 lines; at most 15 modules at the top of lovr_hf/ beside its subpackages.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lovr_hf"
MAX_LINES = 500
MAX_TOP_MODULES = 15


def module_names() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the lovr_hf modules it imports anywhere in its body (a package import counts as its __init__)."""
    mods = module_names()

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "lovr_hf"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    parent = ".".join(base + ([node.module] if node.module else []))
                else:
                    parent = node.module or ""
                if parent.split(".")[0] != "lovr_hf":
                    continue
                targets = [f"{parent}.{a.name}" if f"{parent}.{a.name}" in mods else parent for a in node.names]
            for t in targets:
                k = known(t)
                if k and k != mod:
                    graph[mod].add(k)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    """The measure itself: a two-module and a three-module circle are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}, "g": set()}
    assert sorted(circles(graph)) == [["a", "b"], ["c", "d", "e"]]


def test_no_import_circle_between_lovr_hf_modules() -> None:
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_module_over_500_lines() -> None:
    big = {m: n for m, p in module_names().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_few_modules_at_the_top_of_the_package() -> None:
    top = [p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} top-level modules: {sorted(top)}"


def test_the_import_linter_contract_holds() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' brings import-linter")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def reexported_imports(modules: dict[str, str], importers: dict[str, str],
                       packages: frozenset[str] = frozenset()) -> list[str]:
    """``from M import n`` lines (in ``importers``: label -> source) where ``n`` is not defined in module ``M``
    but only imported into it: a re-export path. A name a package (``M`` in ``packages``: an ``__init__``)
    lists in ``__all__`` is its API and allowed; a plain module's ``__all__`` does not make an import its own."""
    own: dict[str, tuple[set[str], dict[str, str]]] = {}
    for mod, src in modules.items():
        names: set[str] = set()
        imported: dict[str, str] = {}
        for node in ast.parse(src).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                if (mod in packages and node.value is not None
                        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)):
                    names |= set(ast.literal_eval(node.value))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported |= {a.asname or a.name: node.module for a in node.names}
        own[mod] = (names, imported)
    found = []
    for label, src in importers.items():
        for node in ast.walk(ast.parse(src)):
            if not (isinstance(node, ast.ImportFrom) and node.module in own and not node.level):
                continue
            names, imported = own[node.module]
            for a in node.names:
                if f"{node.module}.{a.name}" in modules or a.name in names or a.name not in imported:
                    continue
                found.append(f"{label}:{node.lineno}: from {node.module} import {a.name} "
                             f"(it comes from {imported[a.name]})")
    return found


def test_the_reexport_finder_finds_a_reexport() -> None:
    modules = {"p.a": "def f(): pass\n", "p.b": "from p.a import f\n",
               "p.c": "from p.a import f\n__all__ = ['f']\n", "p": "from p.a import f\n__all__ = ['f']\n"}
    importer = "from p.a import f\nfrom p.b import f\nfrom p.c import f\nfrom p import f\n"
    found = reexported_imports(modules, {"x.py": importer}, packages=frozenset({"p"}))
    assert found == ["x.py:2: from p.b import f (it comes from p.a)", "x.py:3: from p.c import f (it comes from p.a)"]


def test_names_are_imported_from_where_they_live() -> None:
    """No import through a module that merely imported the name (no re-export shims, issue #23): the package,
    its tests, scripts, builders and the metric import each name from its module, or from a package
    ``__init__``'s ``__all__`` (the stage packages' library API, ``lovr_hf.cli``, ``lovr_hf.tiny``)."""
    modules = {m: p.read_text() for m, p in module_names().items()}
    importers = {str(p.relative_to(ROOT)): p.read_text()
                 for folder in ("lovr_hf", "tests", "scripts", "builders", "metrics")
                 for p in sorted((ROOT / folder).rglob("*.py"))}
    packages = frozenset(m for m, p in module_names().items() if p.name == "__init__.py")
    found = reexported_imports(modules, importers, packages)
    assert not found, "\n".join(found)
