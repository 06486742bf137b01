"""Size limits that keep the package readable: no class over 400 lines, no function over 80.

The emulator (a test server, a separate world) is not measured. The ingest operator module must stay
wiring only: under 400 lines, the engine lives in ``ingest/``.

The import contracts, dead code and dependency checks (lint-imports, vulture, deptry) run in
``scripts/test`` beside ruff and mypy, not here: one place for each check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import airflow_provider_sfbulk

PACKAGE = Path(airflow_provider_sfbulk.__file__).parent
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_INGEST_OPERATOR_MODULE_LINES = 400  # operators/ingest.py must stay below this
INGEST_OPERATOR_MODULE = "operators/ingest.py"

#: Known offenders with their size when listed (for information). Empty since the restructure of issue 10;
#: keep it so. An entry that no longer offends makes the test fail too, so the list can only shrink.
KNOWN_OFFENDERS: dict[str, int] = {}


def _modules() -> Iterator[tuple[str, ast.Module, int]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("emulator/"):
            continue
        text = path.read_text(encoding="utf-8")
        yield relative, ast.parse(text, filename=str(path)), len(text.splitlines())


def _definitions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST, int]]:
    """Every class and function, nested ones included, as (qualified name, node, lines)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + child.name
            yield name, child, (child.end_lineno or child.lineno) - child.lineno + 1
            yield from _definitions(child, name + ".")
        else:
            yield from _definitions(child, prefix)


def _oversized() -> dict[str, int]:
    """Everything over its limit: ``module::qualified.name`` (or the ingest module itself) -> lines."""
    found: dict[str, int] = {}
    for module, tree, module_lines in _modules():
        if module == INGEST_OPERATOR_MODULE and module_lines >= MAX_INGEST_OPERATOR_MODULE_LINES:
            found[module] = module_lines
        for name, node, lines in _definitions(tree):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if lines > limit:
                found[f"{module}::{name}"] = lines
    return found


def test_no_class_over_400_lines_no_function_over_80_and_a_small_ingest_operator_module():
    new = {name: lines for name, lines in _oversized().items() if name not in KNOWN_OFFENDERS}
    report = "\n".join(f"  {name}: {lines} lines" for name, lines in sorted(new.items()))
    assert not new, (
        f"split these by concept (classes <= {MAX_CLASS_LINES} lines, functions <= {MAX_FUNCTION_LINES}, "
        f"{INGEST_OPERATOR_MODULE} < {MAX_INGEST_OPERATOR_MODULE_LINES}):\n{report}"
    )


def test_known_offenders_still_offend():
    fixed = sorted(set(KNOWN_OFFENDERS) - set(_oversized()))
    assert not fixed, "now within the limits, remove from KNOWN_OFFENDERS: " + ", ".join(fixed)


def test_the_size_check_sees_classes_functions_and_nesting():
    source = "class A:\n    def f(self):\n        def g():\n            pass\n\n\nasync def h():\n    pass\n"
    tree = ast.parse(source)
    assert [(name, lines) for name, _, lines in _definitions(tree)] == [
        ("A", 4),
        ("A.f", 3),
        ("A.f.g", 2),
        ("h", 2),
    ]
