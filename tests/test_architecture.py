"""The rooms hold: one-way packages, a warehouse with no capture code, small modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "device", "sync")
# what each package may import of ours (DESIGN.md, Architecture)
ALLOWED = {"device": {"device"}, "sync": {"sync"}, "agent": {"agent", "device", "sync"}}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
CAPTURE_ONLY = ("sane", "zbar", "zxingcpp", "numpy", "PIL")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute import in a module, nested ones included: (line, module)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return found


def forbidden_imports(root: Path) -> list[str]:
    """``path:line: package imports module`` for each import that breaks the layering."""
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for line, module in imported_modules(tree):
                top = module.split(".")[0]
                if top in PACKAGES and top not in ALLOWED[package]:
                    where = path.relative_to(root)
                    problems.append(f"{where}:{line}: {package}/ imports {module}")
    return problems


def oversized(root: Path) -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(root)
            if (n := len(text.splitlines())) > MAX_MODULE_LINES:
                problems.append(f"{where}: {n} lines (at most {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        problems.append(
                            f"{where}:{node.lineno}: {node.name} is {length} lines"
                            f" (at most {MAX_FUNCTION_LINES})"
                        )
    return problems


def test_packages_import_only_downward() -> None:
    assert forbidden_imports(REPO) == []


def copy_tree(dest: Path) -> Path:
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            target = dest / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return dest


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        (
            "sync/warehouse/ingest.py",
            "from agent.config import Config\n",
            "sync/warehouse/ingest.py:{n}: sync/ imports agent.config.Config",
        ),
        (
            "device/scanner.py",
            "    from sync.errors import ConfigError\n",
            "device/scanner.py:{n}: device/ imports sync.errors.ConfigError",
        ),
        (
            "sync/spool/store.py",
            "import device.host\n",
            "sync/spool/store.py:{n}: sync/ imports device.host",
        ),
    ],
)
def test_a_forbidden_import_is_named(tmp_path: Path, module: str, line: str, expected: str) -> None:
    tree = copy_tree(tmp_path)
    path = tree / module
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if line.startswith(" "):  # nested, inside the first function
        at = next(i for i, text in enumerate(lines) if text.startswith("def ")) + 1
    else:
        at = next(i for i, text in enumerate(lines) if text.startswith("from __future__")) + 1
    lines.insert(at, line)
    path.write_text("".join(lines), encoding="utf-8")

    assert forbidden_imports(tree) == [expected.format(n=at + 1)]


@pytest.mark.parametrize(
    "module",
    ["sync.warehouse.ingest", "sync.warehouse.index", "sync.fleet", "agent.services.warehouse"],
)
def test_provincial_side_imports_no_capture_library(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {CAPTURE_ONLY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == ""


def test_the_import_test_sees_a_capture_library() -> None:
    code = "import sys, agent.capture.pipeline; print('numpy' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.split() == ["True", "True"]


def test_no_function_over_60_lines_and_no_module_over_400() -> None:
    assert oversized(REPO) == []


def test_the_size_check_names_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "sync").mkdir()
    (tmp_path / "sync" / "long.py").write_text(f"def too_long() -> None:\n{body}", encoding="utf-8")
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "big.py").write_text("x = 1\n" * 401, encoding="utf-8")

    assert oversized(tmp_path) == [
        "agent/big.py: 401 lines (at most 400)",
        "sync/long.py:1: too_long is 61 lines (at most 60)",
    ]


def test_capturing_without_certifying_does_not_load_the_signing_library() -> None:
    # pyHanko takes about a second to import here (three or four on a Pi): every
    # `sohoa scan` and the agent would pay it for nothing
    code = "import sys, agent.cli, agent.capture.wiring; print('pyhanko' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
