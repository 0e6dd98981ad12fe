"""The layout holds: one import namespace, and each folder imports only what it may.

The table is the one in ``foursave/__init__.py``.  Imports are read with ``ast`` from
every module, including those made lazily inside functions (they hide cycles too).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# folder -> the foursave sub-packages its modules may import (besides their own)
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "collector": {"core"},
    # register images come from the collector's profiles; sample manual records for the
    # demo's past are rules.records' schema
    "simulators": {"core", "collector", "rules"},
    "rules": {"core"},
    "reports": {"core", "rules"},
    "api": {"core", "rules", "reports"},
    "dashboards": {"core"},
    "foursave": {"core", "collector", "simulators", "rules", "reports", "api", "dashboards"},
}
TOP_MODULES = {
    "app",
    "brokerconf",
    "cli",
    "demo",
    "localstack",
}  # foursave/*.py, importable as foursave.X
BARE = set(MAY_IMPORT) - {"foursave"} | {"tests"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in a module; ``from foursave import app``
    counts as ``foursave.app``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "foursave":
                found += [(node.lineno, f"foursave.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _layer(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "foursave":
        return None
    if len(parts) == 1 or parts[1] in TOP_MODULES:
        return "foursave"
    return parts[1]


def import_problems(root: Path = ROOT) -> list[str]:
    problems = []
    for folder, allowed in MAY_IMPORT.items():
        for path in sorted((root / folder).rglob("*.py")):
            where = path.relative_to(root)
            for line, name in _imports(path):
                top = name.split(".")[0]
                if top in BARE:
                    problems.append(f"{where}:{line}: bare import {name!r}: use foursave.{name}")
                    continue
                layer = _layer(name)
                if layer is None or layer == folder:
                    continue
                if layer not in allowed:
                    problems.append(
                        f"{where}:{line}: {folder}/ imports {name} ({layer}/ is not below it; "
                        f"{folder}/ may import {sorted(allowed) or 'nothing of foursave'})"
                    )
    return problems


def test_each_folder_imports_only_what_the_layout_allows():
    assert import_problems() == []


def test_the_import_check_finds_a_kernel_reaching_up(tmp_path):
    for folder in MAY_IMPORT:
        (tmp_path / folder).mkdir()
    (tmp_path / "core" / "bad.py").write_text(
        "def f():\n    from foursave.rules.ledger import Ledger\n    import api.main\n"
    )
    (tmp_path / "api" / "fine.py").write_text("from foursave.reports import render\n")
    assert import_problems(tmp_path) == [
        "core/bad.py:2: core/ imports foursave.rules.ledger (rules/ is not below it; "
        "core/ may import nothing of foursave)",
        "core/bad.py:3: bare import 'api.main': use foursave.api.main",
    ]


def test_tests_import_the_product_through_its_namespace():
    bare = [
        f"{p.relative_to(ROOT)}:{line}: {name}"
        for folder in ("tests", "bench")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for line, name in _imports(p)
        if name.split(".")[0] in BARE - {"tests"}
    ]
    assert bare == []


# ------------------------------------------------------------------ the installed wheel


def _write_wheel(dest: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel (PEP 427) for a throwaway package."""
    dist = f"{name}-1.0.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: foursave-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    path = dest / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
        z.writestr(f"{dist}/RECORD", record)
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools leaves a build/ folder beside the sources it builds
    src = out / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "var",
            "test-artifacts",
            "build",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("foursave-*.whl")
    return built


def test_the_wheel_installs_one_top_level_name_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"foursave"}
    for data in (
        "foursave/rules/data/factors.yaml",
        "foursave/collector/profiles/sunspec.yaml",
        "foursave/dashboards/json/solar.json",
        "foursave/api/display/static/display.js",
    ):
        assert data in names, data
    # every module of the source folders is in the wheel, under its foursave name (a
    # sub-package missing from pyproject's package list would be silently left out)
    source = {
        f"foursave/{p.relative_to(ROOT)}" if folder != "foursave" else str(p.relative_to(ROOT))
        for folder in MAY_IMPORT
        for p in (ROOT / folder).rglob("*.py")
    }
    assert source - set(names) == set()
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"foursave = foursave.cli:main" in entry


def test_foursave_installs_beside_a_package_named_rules(wheel, tmp_path):
    """``rules`` is another project's import name on PyPI: both must import, and
    uninstalling foursave must leave the other's files alone."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # foursave's dependencies come from this test run's environment, behind the new venv
    deps = Path(pytest.__file__).resolve().parent.parent
    (site / "zz_deps.pth").write_text(f"{deps}\n")
    other = _write_wheel(tmp_path, "rules", {"rules/__init__.py": "WHO = 'the other rules'\n"})

    def pip(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(py), *args, "-q", "--no-deps"],
            check=True,
            capture_output=True,
            timeout=240,
        )

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=tmp_path)

    pip("install", str(other))
    pip("install", str(wheel))
    both = run(
        "import rules, foursave.rules.formulas, foursave.rules.ledger; print(rules.WHO); "
        "print(foursave.rules.ledger.__file__)"
    )
    assert both.returncode == 0, both.stderr
    who, ledger = both.stdout.splitlines()
    assert who == "the other rules"
    assert Path(ledger).is_relative_to(site / "foursave")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "uninstall", "-y", "-q", "foursave"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert not (site / "foursave").exists()
    assert (site / "rules" / "__init__.py").read_text() == "WHO = 'the other rules'\n"
    after = run("import rules; print(rules.WHO)")
    assert after.stdout.strip() == "the other rules", after.stderr
    assert run("import foursave").returncode != 0
