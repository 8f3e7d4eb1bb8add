"""The layering is a promise: imports point down only. Checked on the source, not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [
    ("pool.core", ("pool.state", "pool.control", "pool.sites", "pool.workloads", "pool.node", "pool.sim",
                   "pool.cli")),
    ("pool.state", ("pool.control", "pool.sites", "pool.workloads", "pool.node", "pool.sim", "pool.cli")),
    ("pool.sites", ("pool.control", "pool.workloads", "pool.node", "pool.sim", "pool.cli")),
    ("pool.control", ("pool.node", "pool.sim", "pool.cli")),
    ("pool.workloads", ("pool.control", "pool.sites", "pool.node", "pool.sim", "pool.cli")),
    ("policies", ("pool.state", "pool.control", "pool.sites", "pool.workloads", "pool.node", "pool.sim",
                  "pool.cli", "sensors", "redis", "celery", "kombu", "libcloud", "time")),
])
def test_imports_point_down(package: str, forbidden: tuple[str, ...]) -> None:
    for path in modules(package):
        bad = sorted(m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        assert not bad, f"{path.relative_to(ROOT)} imports {', '.join(bad)} (a layer above it)"


@pytest.mark.parametrize("package", ["pool", "pool.core", "pool.state", "pool.control", "pool.sites",
                                     "pool.workloads", "pool.node", "pool.sim", "pool.cli"])
def test_every_package_says_its_role(package: str) -> None:
    init = ROOT / package.replace(".", "/") / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and "import" in doc.lower(), f"{init.relative_to(ROOT)}: a docstring saying its role and what it may import"


def test_no_function_of_the_control_loop_is_over_80_lines() -> None:
    for path in modules("pool.control"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = {n.lineno for n in ast.walk(node) if hasattr(n, "lineno") and not isinstance(n, ast.Constant)}
                assert len(lines) <= 80, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {len(lines)} lines"


@pytest.mark.parametrize("package", ["pool.control", "pool.core"])
def test_the_control_loop_and_the_core_name_no_workload(package: str) -> None:
    """Everything a workload needs from the control loop goes through the workload interface, and the
    spec blocks (`celery:`, `spark:`) belong to the workloads, not to the core's spec."""
    for path in modules(package):
        text = path.read_text().lower()
        for word in ("celery", "spark", "condor", "slurm"):
            assert word not in text, f"{path.relative_to(ROOT)} names {word}"
