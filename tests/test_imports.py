"""Import direction (DESIGN.md): ``scripts -> agents, envs -> metarl``.

``envs`` never imports torch or ``agents``; ``metarl`` imports neither ``envs`` nor
``agents``. Checked twice: statically (an AST scan of every source file, including
imports inside functions and ``if TYPE_CHECKING:`` blocks) and at run time (a fresh
interpreter, so modules other tests imported cannot hide or fake a dependency).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN: dict[str, set[str]] = {
    "envs": {"torch", "agents"},
    "metarl": {"envs", "agents"},
}
"""Package -> top-level modules it must not import."""


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module imported anywhere in ``source``.

    Args:
        source: Python source text.
        module: dotted name of the module the source belongs to (resolves relative imports).
        is_package: whether the source is a package's ``__init__.py``.

    Returns:
        Dotted names, e.g. ``{"torch.nn", "envs.core"}``; ``from x import y`` yields ``x`` and ``x.y``.
    """
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(".".join(filter(None, [base, alias.name])) for alias in node.names if alias.name != "*")
    return {name for name in names if name}


def violations(package: str) -> list[str]:
    """``file: imported name`` for every forbidden import in the sources of ``package``."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        is_package = relative.name == "__init__"
        module = ".".join(relative.parent.parts if is_package else relative.parts)
        for name in sorted(imported_modules(path.read_text(), module, is_package)):
            if name.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(REPO)}: {name}")
    return found


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import torch", "envs.core", "torch"),
        ("import torch.nn as nn", "envs.core", "torch.nn"),
        ("from torch import nn", "envs.core", "torch"),
        ("def f():\n    from agents.policy import Policy\n", "envs.core", "agents.policy"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n", "envs.core", "torch"),
        ("from .. import agents", "envs.core", "agents"),
        ("from ..envs import core", "metarl.sampling", "envs"),
        ("from . import vector", "envs", "envs.vector"),
    ],
)
def test_scanner_finds_imports(source: str, module: str, expected: str) -> None:
    is_package = module == "envs"
    assert expected in imported_modules(source, module, is_package)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_sources_respect_import_direction(package: str) -> None:
    assert (REPO / package / "__init__.py").is_file(), f"{package}/ is not a package"
    found = violations(package)
    assert not found, (
        f"{package}/ must not import {', '.join(sorted(FORBIDDEN[package]))} (DESIGN.md import direction); found:\n  "
        + "\n  ".join(found)
    )


def run_fresh(code: str) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter rooted at the repository; return the JSON it prints last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"fresh interpreter failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


LOADED_AFTER = """
import importlib, json, pkgutil, sys
forbidden = set({forbidden!r})
def loaded():
    return {{m.split(".")[0] for m in sys.modules}} & forbidden
package = importlib.import_module({package!r})
report = {{{package!r}: sorted(loaded())}}
for info in pkgutil.walk_packages(package.__path__, {package!r} + "."):
    before = loaded()
    importlib.import_module(info.name)
    report[info.name] = sorted(loaded() - before)
print(json.dumps(report))
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_loads_no_forbidden_module(package: str) -> None:
    report = run_fresh(LOADED_AFTER.format(package=package, forbidden=sorted(FORBIDDEN[package])))
    assert package in report
    offenders = {module: loaded for module, loaded in report.items() if loaded}
    assert not offenders, f"importing {package} loaded forbidden modules (first module to load each): {offenders}"
