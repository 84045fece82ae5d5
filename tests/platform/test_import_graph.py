"""The package's dependency direction: no import cycle, no import up the layers, no import of a missing module.

The imports are read with `ast` (nothing is imported, so no side effects), including the ones inside
functions: a lazy import is still a dependency. Imports under `if TYPE_CHECKING:` are left out (they never
run). The layers, lowest first, are the picture in docs/ARCHITECTURE.md; a module may import its own layer
or any lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlops.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "mlops"

# Lowest first. A module belongs to the layer of its longest listed prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("settings", "errors", "services.errors", "pids"),
    (
        *("layout", "object_store", "spark_io", "spark_capacity", "schemas", "topics", "run_params", "progress"),
        "variants",
        "online_metrics",
        "topic_tail",
        "live_ratings",
        "prediction_budget",
        "kafka_auth",  # who may do what on Kafka: principals, client settings, the ACL table
        "services.jvm",  # the pinned jars spark_io puts on the classpath for s3a
    ),
    (
        "datasets",
        "quality",
        "features",
        "feature_store",
        "model",  # retrievers, candidates, families, ranking, the Recommender: pure numpy / LightGBM
        "promotion",
        "compiled_trees",
        "training.model",
        "drift",
        "drift_windows",
        "feedback",
    ),
    ("training", "evaluation", "model.learners", "registry", "serving", "catalog", "dlq", "online_promotion"),
    ("jobs", "consumer", "orchestration", "services", "status", "bench", "stream_client", "console", "poke"),
    ("cli",),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, layer = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            full = f"mlops.{name}"
            if (module == full or module.startswith(full + ".")) and len(full) > best:
                best, layer = len(full), index
    return layer


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(module: str) -> list[tuple[str, int]]:
    """(imported mlops module or package as written, line) for every import of `module` that can run."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package[: len(package) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:  # `from pkg import submodule` depends on the submodule
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in MODULES else base, child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return [(name, line) for name, line in found if name == "mlops" or name.startswith("mlops.")]


GRAPH = {m: sorted({name for name, _ in imported(m) if name in MODULES and name != m}) for m in MODULES}


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if m != "mlops" and layer_of(m) < 0] == []


def test_every_import_of_the_package_names_a_module_that_exists() -> None:
    missing = [f"{m} line {line}: {name}" for m in MODULES for name, line in imported(m) if name not in MODULES]
    assert missing == [], "imports of modules that do not exist:\n" + "\n".join(missing)


def test_no_import_goes_up_the_layers() -> None:
    upward = [
        f"{m} (layer {layer_of(m)}) imports {dep} (layer {layer_of(dep)})"
        for m, deps in GRAPH.items()
        for dep in deps
        if layer_of(dep) > layer_of(m)
    ]
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := dfs(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]), ({"a": ["b"], "b": [], "c": ["a"]}, None)],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, list[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_the_layer_check_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    # `training.evaluate` imports `model.ranking` at module level, `training.register` imports `mlops.registry`
    # inside a function; `model.ranking` imports the Recommender class for typing only.
    assert "mlops.model.ranking" in GRAPH["mlops.training.evaluate"]
    assert "mlops.registry" in GRAPH["mlops.training.register"]
    assert "mlops.model.recommender" not in GRAPH["mlops.model.ranking"]
    assert layer_of("mlops.training.model") < layer_of("mlops.training.fit")


def test_training_ranks_without_serving() -> None:
    """Offline evaluation ranks with `ranking` (below both), so training never depends on serving's loading code."""
    reach, todo = set(), [m for m in GRAPH if m.startswith("mlops.training")]
    while todo:
        for dep in GRAPH[todo.pop()]:
            if dep not in reach:
                reach.add(dep)
                todo.append(dep)
    assert "mlops.serving" not in reach
