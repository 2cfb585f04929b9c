"""The package's layering (docs/architecture.md), checked on the source: which way imports point, no import
cycles, and no function over 60 lines or over mccabe complexity 12 without a reason written beside it.

Every import is read with ``ast`` (relative and absolute, at module level and inside functions). Today's
exceptions are listed below with a reason each; a listed exception that no longer exists fails too, so the
lists only shrink.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import apdepth

PACKAGE = Path(apdepth.__file__).resolve().parent
MAX_LINES = 60  # lines of a function, its docstring not counted
MAX_COMPLEXITY = 12

# ---------------------------------------------------------------------------------------------- the layers

CORE, MIDDLE, TOP, TESTING = 0, 1, 2, 3
LAYER_NAMES = {CORE: "core", MIDDLE: "middle", TOP: "top", TESTING: "testing"}
# Module (exact) or package (it and everything under it) -> layer; the longest match wins. `apdepth.embedded`
# itself is the embedded model's data locator (embedded_model_path, no imports), usable from every layer; the
# modules under it (recipe, card, pretraining, evaluate) are top-layer.
LAYERS = {
    "apdepth": CORE, "apdepth._compat": CORE, "apdepth._lazy": CORE, "apdepth.allocator": CORE, "apdepth.depth_io": CORE,
    "apdepth.devices": CORE, "apdepth.hf_pipeline": CORE, "apdepth.hub": CORE, "apdepth.image_utils": CORE,
    "apdepth.io": CORE, "apdepth.losses": CORE, "apdepth.pipeline": CORE, "apdepth.configs": CORE,
    "apdepth.data": CORE, "apdepth.diffusion": CORE, "apdepth.modules": CORE, "apdepth.priors": CORE,
    "apdepth.training": MIDDLE, "apdepth.evaluation": MIDDLE, "apdepth.postprocessing": MIDDLE,
    "apdepth.export": MIDDLE, "apdepth.synth": MIDDLE,
    "apdepth.embedded": TOP, "apdepth.benchmark": TOP, "apdepth.apps": TOP, "apdepth.community": TOP,
    "apdepth.__main__": TOP,
    "apdepth.testing": TESTING,
}
EXACT_LAYERS = {"apdepth": CORE, "apdepth.embedded": CORE}  # packages whose __init__ alone sits lower
# evaluation scores predictions (arrays): it does not run models
EVALUATION_MUST_NOT_IMPORT = ("apdepth.pipeline", "apdepth.diffusion", "apdepth.priors", "apdepth.apps")
APPS_IMPORTERS = ("apdepth.apps", "apdepth.__main__")  # only the command line itself imports the command line

# Imports against the rules by design, each with its reason. Checked like KNOWN_VIOLATIONS: must still exist.
EXCEPTIONS = {
    ("apdepth.pipeline", "apdepth.postprocessing.tta"):
        "function-level: pipeline(output_uncertainty=True) delegates to test-time augmentation, which imports "
        "only image_utils and postprocessing.affine (no cycle)",
}
# Imports against the rules today that are being moved; remove an entry when its fix lands (the test says so).
KNOWN_VIOLATIONS = {
}

# ---------------------------------------------------------------------------------------------- long functions

# Today's functions over MAX_LINES lines or MAX_COMPLEXITY that are being split. A function that must stay
# long or branchy says why on its `def` line instead: `# long: <reason>` / `# complex: <reason>`.
KNOWN_LONG = {
}

# ---------------------------------------------------------------------------------------------- reading the code


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported, resolved to a module of the package where one matches
    line: int
    module_level: bool  # runs when the importer is imported (not inside a function)
    type_only: bool  # under `if TYPE_CHECKING:` (never runs)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(base: str, names: list[str], modules) -> list[str]:
    """``from base import a, b``: each name that is a submodule is the import of that submodule."""
    subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
    return subs or [base]


def read_imports(source: str, module: str, is_package: bool, modules) -> list[Import]:
    """Every import of ``apdepth`` in ``source`` (the text of ``module``), with where it runs."""
    out: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, module_level: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - (child.level - 1)] + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                targets = _resolve(base, [a.name for a in child.names], modules)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), module_level, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), module_level, type_only)
                continue
            else:
                inner_level = module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                visit(child, inner_level, type_only)
                continue
            out.extend(Import(module, t, child.lineno, module_level, type_only)
                       for t in targets if t == "apdepth" or t.startswith("apdepth."))

    visit(ast.parse(source), True, False)
    return out


@functools.cache
def all_imports() -> list[Import]:
    modules = package_modules()
    return [imp for name, path in modules.items()
            for imp in read_imports(path.read_text(), name, path.name == "__init__.py", modules)]


def layer_of(module: str) -> int | None:
    if module in EXACT_LAYERS:
        return EXACT_LAYERS[module]
    matches = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def rule_violations(imports: list[Import]) -> dict[tuple[str, str], str]:
    """(importer, imported) -> the rule it breaks."""
    bad: dict[tuple[str, str], str] = {}
    for imp in imports:
        src, dst = imp.importer, imp.target
        if _within(src, dst) or _within(dst, src):
            continue  # a package and its own modules
        ls, ld = layer_of(src), layer_of(dst)
        if _within(dst, "apdepth.testing") and not _within(src, "apdepth.testing"):
            bad[src, dst] = "the library imports apdepth.testing (tests only)"
        elif ls is not None and ld is not None and ld > ls:
            bad[src, dst] = f"a {LAYER_NAMES[ls]} module imports a {LAYER_NAMES[ld]} module"
        elif _within(src, "apdepth.evaluation") and any(_within(dst, p) for p in EVALUATION_MUST_NOT_IMPORT):
            bad[src, dst] = "evaluation imports a model-running module"
        elif _within(dst, "apdepth.apps") and not any(_within(src, p) for p in APPS_IMPORTERS):
            bad[src, dst] = "the library imports the command line (apdepth.apps)"
    return bad


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles by depth-first search: each back edge closes one cycle, reported as its path."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


def module_graph(imports: list[Import]) -> dict[str, set[str]]:
    """Module-level, executed imports only (function-level and TYPE_CHECKING imports run later or never)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.module_level and not imp.type_only and imp.target != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.target)
    return graph


# ---------------------------------------------------------------------------------------------- the machinery


def test_read_imports_resolves_relative_absolute_and_function_level():
    modules = {"apdepth", "apdepth.a", "apdepth.a.b", "apdepth.a.c", "apdepth.d", "apdepth.e"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from . import c\n"           # apdepth.a.c (a submodule)
        "from ..d import thing\n"     # apdepth.d
        "import apdepth.e as e\n"
        "if TYPE_CHECKING:\n"
        "    from .c import T\n"
        "else:\n"
        "    T = None\n"
        "class K:\n"
        "    from .. import e\n"     # a class body runs at import
        "def f():\n"
        "    from apdepth.a import b\n"  # apdepth.a.b, function-level
    )
    got = {(i.target, i.line, i.module_level, i.type_only)
           for i in read_imports(source, "apdepth.a.b", False, modules)}
    assert got == {("apdepth.a.c", 3, True, False), ("apdepth.d", 4, True, False), ("apdepth.e", 5, True, False),
                   ("apdepth.a.c", 7, True, True), ("apdepth.e", 11, True, False), ("apdepth.a.b", 13, False, False)}
    # in a package's __init__, `from .` is the package itself
    assert [i.target for i in read_imports("from .b import x\n", "apdepth.a", True, modules)] == ["apdepth.a.b"]


def test_find_cycles_and_rules_on_toy_inputs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    imports = [Import("apdepth.pipeline", "apdepth.training.loop", 1, True, False),
               Import("apdepth.evaluation.metrics", "apdepth.priors", 1, True, False),
               Import("apdepth.benchmark.runner", "apdepth.testing", 1, False, False),
               Import("apdepth.embedded.recipe", "apdepth.apps.cli", 1, False, False),
               Import("apdepth.training.build", "apdepth.embedded", 1, False, False),  # the locator: allowed
               Import("apdepth.apps.cli", "apdepth.training", 1, False, False)]  # downwards: allowed
    assert set(rule_violations(imports)) == {("apdepth.pipeline", "apdepth.training.loop"),
                                             ("apdepth.evaluation.metrics", "apdepth.priors"),
                                             ("apdepth.benchmark.runner", "apdepth.testing"),
                                             ("apdepth.embedded.recipe", "apdepth.apps.cli")}


# ---------------------------------------------------------------------------------------------- the package


def test_every_module_has_a_layer():
    """A new top-level module or package must be placed in a layer here and in docs/architecture.md."""
    missing = [m for m in package_modules() if layer_of(m) is None]
    assert not missing, f"modules with no layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_embedded_locator_imports_nothing_from_the_package():
    """apdepth.embedded sits in the core only because its __init__ is a pure data locator."""
    locator = [i for i in all_imports() if i.importer == "apdepth.embedded"]
    assert locator == [], f"apdepth/embedded/__init__.py imports {[i.target for i in locator]}"


def test_imports_point_down_the_layers():
    found = rule_violations(all_imports())
    listed = set(EXCEPTIONS) | set(KNOWN_VIOLATIONS)
    new = {f"{a} -> {b}: {why}" for (a, b), why in found.items() if (a, b) not in listed}
    gone = sorted(f"{a} -> {b}" for a, b in listed if (a, b) not in found)
    assert not new, "imports against docs/architecture.md:\n" + "\n".join(sorted(new))
    assert not gone, ("listed in EXCEPTIONS / KNOWN_VIOLATIONS but no longer an offending import; remove them: "
                      f"{gone}")


def test_no_import_cycles_at_module_level():
    cycles = find_cycles(module_graph(all_imports()))
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# ---------------------------------------------------------------------------------------------- function size


@dataclass(frozen=True)
class Function:
    name: str  # apdepth.module.Class.function
    path: Path
    line: int
    lines: int
    header: str  # the `def` line(s), up to the body: where `# long:` / `# complex:` reasons go


def package_functions(root: Path = PACKAGE) -> list[Function]:
    out: list[Function] = []
    for module, path in package_modules(root).items():
        text = path.read_text().splitlines()

        def visit(node: ast.AST, prefix: str, text=text, module=module, path=path) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}.{child.name}"
                    header = "\n".join(text[child.lineno - 1:max(child.lineno, child.body[0].lineno - 1)])
                    lines = child.end_lineno - child.lineno + 1
                    first = child.body[0]
                    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                            and isinstance(first.value.value, str):  # the docstring does not count
                        lines -= first.end_lineno - first.lineno + 1
                    out.append(Function(name, path, child.lineno, lines, header))
                    visit(child, name)
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}.{child.name}")
                else:
                    visit(child, prefix)

        visit(ast.parse("\n".join(text)), module)
    return out


def _has_reason(fn: Function, kind: str) -> bool:
    return re.search(rf"#.*\b{kind}:\s*\S", fn.header) is not None


def _ruff_command() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    return [exe] if exe else None


def complexities(root: Path = PACKAGE) -> dict[tuple[str, int], int]:
    """(file, def line) -> mccabe complexity, for every function over MAX_COMPLEXITY (ruff's C901)."""
    ruff = _ruff_command()
    if ruff is None:
        pytest.skip("ruff is not installed (the dev extra): mccabe complexity cannot be measured")
    out = subprocess.run([*ruff, "check", str(root), "--select", "C901", "--config",
                          f"lint.mccabe.max-complexity={MAX_COMPLEXITY}", "--output-format", "json",
                          "--ignore-noqa", "--no-cache", "--exit-zero"],
                         capture_output=True, text=True, check=True, cwd=root.parent)
    found = {}
    for item in json.loads(out.stdout):
        m = re.search(r"\((\d+) > \d+\)", item["message"])
        assert item["code"] == "C901" and m, f"unexpected ruff output: {item}"
        found[str(Path(item["filename"]).resolve()), item["location"]["row"]] = int(m.group(1))
    return found


def test_function_reader_measures_lines_and_finds_reasons(tmp_path):
    pkg = tmp_path / "apdepth"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("class C:\n    def f(self,  # long: a table\n          x):\n        y = x\n"
                              "        return y\n\n\ndef g():\n    def inner():\n        pass\n")
    fns = {f.name: f for f in package_functions(pkg)}
    assert {n: (f.line, f.lines) for n, f in fns.items()} == {
        "apdepth.m.C.f": (2, 4), "apdepth.m.g": (8, 3), "apdepth.m.g.inner": (9, 2)}
    assert _has_reason(fns["apdepth.m.C.f"], "long") and not _has_reason(fns["apdepth.m.C.f"], "complex")
    assert not _has_reason(fns["apdepth.m.g"], "long")


@functools.cache
def _offenders(with_complexity: bool) -> dict[str, list[str]]:
    """qualified name -> what is over the limit (and has no reason written beside it)."""
    cplx = complexities() if with_complexity else {}
    out: dict[str, list[str]] = {}
    for fn in package_functions():
        if fn.lines > MAX_LINES and not _has_reason(fn, "long"):
            out.setdefault(fn.name, []).append(f"{fn.lines} lines")
        c = cplx.get((str(fn.path.resolve()), fn.line))
        if c is not None and not _has_reason(fn, "complex"):
            out.setdefault(fn.name, []).append(f"complexity {c}")
    return out


def _check_offenders(offenders: dict[str, list[str]], what: str) -> None:
    new = {n: why for n, why in offenders.items() if n not in KNOWN_LONG}
    assert not new, (f"functions over {what} (split them, or write `# long: <reason>` / `# complex: <reason>` "
                     f"on the def line): {new}")


def test_no_function_over_60_lines():
    offenders = _offenders(with_complexity=False)
    _check_offenders(offenders, f"{MAX_LINES} lines")


def test_no_function_over_complexity_12():
    offenders = {n: w for n, w in _offenders(with_complexity=True).items() if any("complexity" in x for x in w)}
    _check_offenders(offenders, f"mccabe complexity {MAX_COMPLEXITY}")


def test_known_long_functions_still_need_their_entry():
    """A function in KNOWN_LONG that was split (or no longer exists) must leave the list."""
    names = {fn.name for fn in package_functions()}
    offenders = _offenders(with_complexity=_ruff_command() is not None)
    stale = sorted(n for n in KNOWN_LONG if n not in offenders)
    if _ruff_command() is None:  # without ruff, only the length can be judged
        stale = [n for n in stale if n not in names or "complexity" not in KNOWN_LONG[n]]
    assert not stale, f"no longer over the limits, or gone; remove from KNOWN_LONG: {stale}"
