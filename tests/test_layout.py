"""The shape of the package: one home per concept, low floors knowing nothing of high ones.

* The import graph of splitgrad/ (every import, at module level or inside a function; importing
  a.b also runs package a) has no cycle but the engine's own: tensor ↔ ops.
* Every hand-written gradient (a `Function` subclass) lives under splitgrad/ops/ and is listed
  in `ops.PRIMITIVES`, the one table a student reads to find any backward.
* The engine (tensor.py) imports nothing of splitgrad but the ops.
* The README's "Where things live" table names every top-level module and package, and
  nothing that does not exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import splitgrad
from splitgrad import ops
from splitgrad.tensor import Function

PACKAGE = Path(splitgrad.__file__).resolve().parent
README = PACKAGE.parent / "README.md"


def _modules() -> dict:
    """{dotted name: path} of every module of the package (a package is its __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_graph() -> dict:
    mods = _modules()
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_package else name.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)]
                else:
                    base = []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                    dep = ".".join(parts[:i])
                    # A module's own packages are already running when it is imported.
                    if dep in mods and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def _cycles(graph) -> list:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def test_the_only_import_cycle_is_the_engine_and_its_ops():
    cycles = _cycles(_import_graph())
    engine = {"splitgrad.tensor", "splitgrad.ops"}
    bad = [
        c for c in cycles if not set(c) <= engine | {m for m in c if m.startswith("splitgrad.ops.")}
    ]
    assert not bad, f"import cycles: {bad}"
    for cycle in cycles:  # the allowed one: tensor.py needs the ops for its operators
        assert "splitgrad.tensor" in cycle


def test_a_cycle_would_be_found():
    """Guards the test above: the cycle finder sees a two-module and a three-module cycle."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b"], ["c", "d", "e"]]


def test_the_engine_imports_only_its_ops():
    tree = ast.parse((PACKAGE / "tensor.py").read_text())
    relative = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level
    }
    absolute = {
        a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for a in node.names
        if a.name.startswith("splitgrad")
    }
    assert relative <= {None} and not absolute  # `from . import ops as _ops` only


def _all_functions():
    found = {}
    for info in pkgutil.walk_packages(splitgrad.__path__, "splitgrad."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Function) and cls is not Function and cls.__module__ == info.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_gradient_lives_under_ops_and_is_in_the_table():
    functions = _all_functions()
    assert len(functions) >= len(ops.PRIMITIVES) > 40
    outside = [name for name in functions if not name.startswith("splitgrad.ops.")]
    assert not outside, f"hand-written gradients outside splitgrad/ops/: {outside}"
    listed = set(ops.PRIMITIVES.values())
    # Private bases (the recurrent driver, the max/min base) need no row of their own.
    missing = [
        name
        for name, cls in functions.items()
        if cls not in listed and not cls.__name__.startswith("_")
    ]
    assert not missing, f"primitives missing from ops.PRIMITIVES: {missing}"
    doc_rows = ops.__doc__
    for name, cls in ops.PRIMITIVES.items():
        assert name in doc_rows, f"{name} is not in the table of ops/__init__.py's docstring"
        assert cls.backward is not Function.backward, name


def test_the_readme_table_matches_the_tree():
    text = README.read_text()
    section = text[text.index("Where things live") :]
    section = section[: section.index("\n\n", section.index("|---"))]
    named = set(re.findall(r"`splitgrad/([\w/.]+?)`", section))
    top = {
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
        and p.name != "__init__.py"
    }
    missing = sorted(
        top
        - {n if n.endswith((".py", "/")) else n + "/" for n in named}
        - {n.split("/")[0] + "/" for n in named if "/" in n.rstrip("/")}
    )
    assert not missing, f"modules the README's table does not mention: {missing}"
    for name in named:
        assert (PACKAGE / name.rstrip("/")).exists(), f"the README names {name}, which is gone"
