"""Rules of the house that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.server

UI_ONLY = {"textual", "plotext", "textual_plotext"}


def test_nothing_outside_ui_imports_textual_or_plotext():
    offenders = []
    for path in (REPO / "pairs_tui").rglob("*.py"):
        if "ui" in path.relative_to(REPO / "pairs_tui").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in UI_ONLY]
    assert offenders == []


def test_no_eval_or_exec_in_the_package():
    for path in (REPO / "pairs_tui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, path


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(args):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
