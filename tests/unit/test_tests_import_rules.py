"""The test suite's own import rule: a test module never imports from another test
module.  Shared pieces live in tests/helpers.py (or tests/api_fixtures.py, tests/fuzz.py)
and fixtures in conftest.py, so running, moving or deleting one test file never changes
another.  (The product's import graph is checked by tests/test_layout.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent


def _module_name(path: Path) -> str:
    """``tests/unit/test_x.py`` -> ``tests.unit.test_x``; a package's ``__init__`` is the
    package itself."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_test_module(name: str) -> bool:
    """``tests.test_alerts``, ``tests.unit.test_codec`` (or anything inside one)."""
    parts = name.split(".")
    return parts[0] == "tests" and any(p.startswith("test_") for p in parts[1:])


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name a ``from`` import refers to (relative ones resolved)."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def violations(source: str, filename: str, importer: str, is_package: bool = False) -> list[str]:
    """``file:line: imports <module>`` for each import of a test module in ``source``:
    ``import tests.test_x``, ``from tests.test_x import y``, ``from tests import test_x``,
    their relative forms, and ``importlib.import_module("tests.test_x")``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, importer, is_package)
            targets = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        bad = next((t for t in targets if _is_test_module(t)), None)
        if bad:
            out.append(f"{filename}:{node.lineno}: imports {bad}")
    return out


def test_no_test_module_imports_another():
    files = sorted(TESTS.rglob("*.py"))
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # the walk sees the whole tree, this folder and the shared helpers included
    assert {
        "tests/helpers.py",
        "tests/conftest.py",
        "tests/unit/test_tests_import_rules.py",
    } <= names
    found = []
    for path in files:
        found += violations(
            path.read_text(encoding="utf-8"),
            path.relative_to(ROOT).as_posix(),
            _module_name(path),
            is_package=path.name == "__init__.py",
        )
    assert found == [], (
        "test modules import from other test modules; move the shared piece to "
        "tests/helpers.py (or a fixture in conftest.py):\n" + "\n".join(found)
    )


def test_the_rule_catches_every_form_of_import():
    source = "\n".join(
        [
            "from tests.helpers import wait_for",  # 1: allowed
            "from tests.test_mqtt_status import Watcher",  # 2
            "import tests.test_physics",  # 3
            "from tests import helpers, test_alerts",  # 4
            "from .test_codec import x",  # 5: relative, inside tests.unit
            "from .. import test_pv",  # 6
            "from ..test_alerts import Mailbox",  # 7
            "import importlib",  # 8: allowed
            "m = importlib.import_module('tests.unit.test_plan')",  # 9
            "from tests.api_fixtures import NOW",  # 10: allowed
            "import tests.testing_tools",  # 11: allowed, not test_*
        ]
    )
    found = violations(source, "tests/unit/test_sample.py", "tests.unit.test_sample")
    assert found == [
        "tests/unit/test_sample.py:2: imports tests.test_mqtt_status",
        "tests/unit/test_sample.py:3: imports tests.test_physics",
        "tests/unit/test_sample.py:4: imports tests.test_alerts",
        "tests/unit/test_sample.py:5: imports tests.unit.test_codec",
        "tests/unit/test_sample.py:6: imports tests.test_pv",
        "tests/unit/test_sample.py:7: imports tests.test_alerts",
        "tests/unit/test_sample.py:9: imports tests.unit.test_plan",
    ]
    # in a package's __init__, "." is the package itself
    assert violations("from .test_x import y", "tests/__init__.py", "tests", is_package=True) == [
        "tests/__init__.py:1: imports tests.test_x"
    ]
