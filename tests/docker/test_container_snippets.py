"""The container suite's `python -c` snippets import only names the package has (CI-run: the suite is not)."""

from __future__ import annotations

import ast
import importlib
import importlib.util

import pytest

from mlops.settings import PROJECT_ROOT

SNIPPETS = PROJECT_ROOT / "tests" / "containers" / "snippets.py"


def _snippets() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("container_snippets", SNIPPETS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: value for name, value in vars(module).items() if name.isupper() and isinstance(value, str)}


def test_there_are_snippets_to_check() -> None:
    assert "PIPELINE" in _snippets()


@pytest.mark.parametrize("name", sorted(_snippets()))
def test_every_name_a_snippet_imports_exists(name: str) -> None:
    tree = ast.parse(_snippets()[name])  # a syntax error fails here, not in a container an hour later
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom | ast.Import)]
    assert imports, f"{name} imports nothing: nothing to check"
    for node in imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
            continue
        module = importlib.import_module(node.module)
        missing = [a.name for a in node.names if not hasattr(module, a.name)]
        assert not missing, f"{name}: `from {node.module} import {', '.join(missing)}`: no such name"
