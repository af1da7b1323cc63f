"""The layout shows the flow: stage packages, imports that run one way only, no circles, DAG files that wire.

The layers contract lives in ``pyproject.toml`` (``[tool.importlinter]``) and is checked with import-linter, the
kept library for it; the test also plants an upward import in a copy of the tree and checks the contract catches
it, so the check itself can fail.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_imports_run_downward_only():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_the_layers_contract_catches_a_planted_upward_import(tmp_path):
    for part in ("pipeline", "serving"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    labels = tmp_path / "pipeline" / "training" / "labels.py"
    labels.write_text(labels.read_text() + "\n\ndef _planted():\n    from pipeline.registry import gate  # upward\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "0 kept, 1 broken" in out.stdout
    assert "pipeline.training.labels -> pipeline.registry.gate" in out.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every import circle among ``modules`` (one per strongly connected component larger than one module)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(m: str) -> None:  # Tarjan's algorithm
        index[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m) & modules:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_module_imports_itself_through_a_circle():
    graph = grimp.build_graph("pipeline", "serving", exclude_type_checking_imports=True)
    assert _cycles(graph, set(graph.modules)) == []


def test_the_cycle_finder_sees_a_circle():
    graph = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(m)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph, {"a.x", "a.y", "a.z"}) == [["a.x", "a.y"]]


def test_every_package_and_base_module_sits_in_a_layer():
    """A new folder under pipeline/ (or a new top-level module) must be placed in the contract, not left free."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    children = {f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__"}
    children |= {f"pipeline.{p.name}" for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").exists()}
    assert children | {"serving"} == named


def test_pipeline_top_level_holds_only_the_base_modules():
    top = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert len(top) <= 6, top
    stages = {"core", "catalog", "validation", "training", "evaluation", "registry", "tagging", "orchestration"}
    assert stages <= {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").exists()}
    for stage in stages:  # each stage says what it takes and gives
        doc = ast.get_docstring(ast.parse((ROOT / "pipeline" / stage / "__init__.py").read_text()))
        assert doc and len(doc) > 60, stage


@pytest.mark.parametrize("dag_file", sorted((ROOT / "dags").glob("*.py")), ids=lambda p: p.stem)
def test_dag_files_reach_the_pipeline_only_through_orchestration(dag_file):
    """DAG files only wire: stage logic is reached through ``pipeline.orchestration`` (plus the settings and
    the standard-library options model for parameter schemas)."""
    allowed = ("pipeline.orchestration", "pipeline.settings", "pipeline.training.options", "pipeline.errors")
    for node in ast.walk(ast.parse(dag_file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("pipeline", "serving"):
            assert node.module.startswith(allowed), f"{dag_file.name} imports {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] not in ("pipeline", "serving"), alias.name
