"""The engine's packages form layers, and the import graph says so.

Each top-level module or package of `engine/` sits in one layer of LAYERS (bottom first) and
may import only from layers below its own: never from a layer above, nor from another package
of its own layer. That makes the package graph acyclic by construction, and lets a newcomer
read the architecture from the folders (docs/architecture.md, "Where things live"). Every
import counts, including those inside functions (a backend imported lazily) and under
TYPE_CHECKING: a back-edge there is still a back-edge. The drivers of the distributed extra
(Cassandra, Kafka, Redis) are imported only by their backends.

An ast walk rather than import-linter: the rule fits in this file, needs no dependency, and
its failure names the importing file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"

# Bottom first. A package may import from strictly lower rows only.
LAYERS: list[tuple[str, set[str]]] = [
    ("vocabulary", {"errors", "clock", "ids", "observability"}),
    ("definitions", {"model", "config", "backends"}),
    ("query language", {"visibility"}),
    ("state machine, pure", {"execution"}),  # no store, log, matching or API: no I/O
    ("state store", {"persistence"}),
    ("logs, task lists", {"queues", "matching"}),  # the in-process log lives in the SQLite file
    ("caller side of shards", {"routing"}),
    ("shard ownership", {"shards"}),
    ("shard apply side", {"history"}),
    ("roles", {"frontend", "transfer", "timer", "startup"}),
    ("composition root", {"server"}),
    ("command line", {"cli"}),
]
RANK = {pkg: rank for rank, (_, pkgs) in enumerate(LAYERS) for pkg in pkgs}
# The drivers of the distributed extra, each imported only by the backends of one package.
DRIVERS = {"cassandra": "persistence", "aiokafka": "queues", "redis": "matching"}


def package_of(module: str) -> str | None:
    """`engine.history.engine` -> `history`; None outside the engine."""
    parts = module.split(".")
    return parts[1] if parts[0] == "engine" and len(parts) > 1 else None


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported engine module, line) of every import in `path`."""
    here = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".")[: -node.level]
                yield ".".join([*base, *filter(None, [node.module])]), node.lineno
            elif node.module:
                yield node.module, node.lineno


def package_edges() -> dict[tuple[str, str], str]:
    """(importer, imported) package pairs, each with one place that imports so."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        src = package_of(".".join(path.relative_to(ENGINE.parent).with_suffix("").parts))
        for module, line in imports(path):
            dst = package_of(module)
            if src and dst and src != dst:
                edges.setdefault((src, dst), f"{path.relative_to(ENGINE.parent)}:{line}")
    return edges


def test_every_package_has_a_layer() -> None:
    # A folder with modules is a package here, __init__.py or not (frontend/ has none).
    modules = {p.stem for p in ENGINE.glob("*.py")} - {"__init__"}
    packages = modules | {p.name for p in ENGINE.iterdir() if any(p.glob("*.py"))}
    assert packages - RANK.keys() == set(), "add the new package to LAYERS"
    assert RANK.keys() - packages == set(), "LAYERS names a package that is gone"


def test_imports_only_go_down() -> None:
    upward = [
        f"{where}: {src} ({LAYERS[RANK[src]][0]}) imports {dst} ({LAYERS[RANK[dst]][0]})"
        for (src, dst), where in package_edges().items()
        if RANK[dst] >= RANK[src]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_drivers_stay_in_their_backends() -> None:
    strays = [
        f"{path.relative_to(ENGINE.parent)}:{line}: imports {module}"
        for path in sorted(ENGINE.rglob("*.py"))
        for module, line in imports(path)
        if module.split(".")[0] in DRIVERS
        and path.relative_to(ENGINE).parts[0] != DRIVERS[module.split(".")[0]]
    ]
    assert not strays, "a driver imported outside its backend:\n" + "\n".join(strays)


def test_no_cycles_between_packages() -> None:
    """Independent of LAYERS: a cycle is reported as a path, even if the table were wrong."""
    graph: dict[str, set[str]] = {}
    for src, dst in package_edges():
        graph.setdefault(src, set()).add(dst)
    done: set[str] = set()

    def visit(pkg: str, path: list[str]) -> None:
        if pkg in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(pkg) :], pkg]))
        if pkg in done:
            return
        for dst in sorted(graph.get(pkg, ())):
            visit(dst, [*path, pkg])
        done.add(pkg)

    for pkg in sorted(graph):
        visit(pkg, [])
