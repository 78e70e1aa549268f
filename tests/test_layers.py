"""The layer contract (pyproject.toml, checked by import-linter) and what import-linter cannot see:
private names imported across modules, and target names compared instead of features asked."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "bitsearch"


def modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out.append((name, ast.parse(path.read_text(), str(path))))
    return out


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is missing: pip install -e .[dev] installs import-linter")
    result = subprocess.run([lint], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_private_name_is_imported_from_another_module() -> None:
    """``from a.b import _c`` outside ``a.b`` reaches into another module's insides (a private
    module of one's own package, ``from pkg import _mod``, is fine)."""
    found = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bitsearch"):
                for alias in node.names:
                    private = alias.name.startswith("_")
                    submodule = (PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                    if private and not submodule and node.module != name:
                        found.append(f"{name}: from {node.module} import {alias.name}")
    assert not found, "\n".join(found)


def test_code_asks_targets_for_features_instead_of_comparing_names() -> None:
    """Only bitsearch/targets.py spells out what a target is; elsewhere a comparison with a
    target name would treat every new target as one of the old ones."""
    names = {"x86_64-avx2", "x86_64-avx512", "aarch64-cortex-a53"}
    found = []
    for name, tree in modules():
        if name == "bitsearch.targets":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                if any(c in names for c in consts if isinstance(c, str)):
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
