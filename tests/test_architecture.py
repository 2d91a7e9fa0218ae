"""The architecture, as tests: layers import one way, and names and modules stay small and
unambiguous.

The layers, bottom up: ``cost_models`` (pure cost functions, the exception root), then
``spaces`` and ``targets`` (each on ``cost_models`` only), then ``search`` (on all three).
``experiments`` (benchmarks and scripts) may import anything, and nothing imports it. Every
import counts: at module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cost_models", "spaces", "targets", "search", "experiments")
ALLOWED = {
    "cost_models": {"cost_models"},
    "spaces": {"spaces", "cost_models"},
    "targets": {"targets", "cost_models"},
    "search": {"search", "spaces", "targets", "cost_models"},
    "experiments": set(PACKAGES),
}
MAX_LINES = 475


def _modules(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _imported(tree: ast.AST, path: Path) -> set[str]:
    """The top-level packages a module imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                names.add(path.relative_to(ROOT).parts[0])
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def test_imports_point_down() -> None:
    upward = []
    for path in _modules():
        pkg = _package(path)
        for name in _imported(ast.parse(path.read_text()), path) & set(PACKAGES):
            if name not in ALLOWED[pkg]:
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert upward == []


def test_the_walker_sees_imports_in_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from search.spec import Spec\n"
        "def f():\n    import experiments.bench_util\n"
    )
    assert _imported(ast.parse(source), ROOT / "cost_models" / "x.py") >= {"search", "experiments"}


def test_no_public_function_name_is_defined_twice() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules(("cost_models", "spaces", "targets", "search")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef
            ) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it where its jobs are"


TOP_LEVEL_DOC = re.compile(r"\b[A-Z][A-Z_]{3,}\.md\b")  # README.md and its kind


def test_every_top_level_document_a_module_cites_is_in_the_repository() -> None:
    """Design notes the code needs live in the repository (README.md, docs/); a module that
    names a document kept outside it points readers at nothing."""
    missing = {
        f"{p.relative_to(ROOT)}: {doc}"
        for p in _modules()
        for doc in TOP_LEVEL_DOC.findall(p.read_text())
        if not (ROOT / doc).exists() and not any(ROOT.glob(f"docs/**/{doc}"))
    }
    assert missing == set()
