"""lorakit's layering, measured: ``python tests/layering.py [ROOT]`` prints

* the import circles among lorakit's modules: the strongly connected components of the graph of
  every ``import`` statement that runs, lazy ones inside functions included (an import under
  ``if TYPE_CHECKING:`` never runs, so it cannot close a circle; the other two lists count it);
* every private name (``_x``) imported from another lorakit module (``from m import _x``, or
  ``m._x`` read off an imported lorakit module), and every private module (``pkg._m``) imported
  from outside its package ``pkg``;
* every engine module (README "Architecture": the engines, the problems, the trees and the local
  trainer) that imports ``lorakit.adapters``.

ROOT is a checkout (default: this one). ``tests/test_layering.py`` asserts that all three lists are
empty. Only explicit imports are edges: importing ``lorakit.a.b`` also runs ``lorakit/a/__init__``,
but that is Python's mechanics, not a dependency the importer chose.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

#: Modules written once over the problem protocol: none of them may import ``lorakit.adapters``.
ENGINES = (
    "lorakit.chain",
    "lorakit.federated",
    "lorakit.decentralized",
    "lorakit.asynchronous",
    "lorakit.local",
    "lorakit.tree",
    "lorakit.problems",
)


@dataclass(frozen=True)
class Import:
    """One imported lorakit module (``name`` set when a name is taken from it)."""

    importer: str
    line: int
    module: str
    name: str | None = None
    runs: bool = field(default=True, compare=False)  # False under ``if TYPE_CHECKING:``

    def __str__(self):
        what = f"{self.name} from {self.module}" if self.name else self.module
        return f"{self.importer}:{self.line} imports {what}"


def modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module of the ``lorakit`` package under ``root``."""
    found = {}
    for path in sorted((root / "lorakit").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(importer: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of ``from [.]*module import ...`` in ``importer``."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    # ``from . import x`` in a package's __init__ is relative to the package itself.
    base = base[: len(base) - node.level + (1 if _is_package(path) else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(root: Path) -> list[Import]:
    """Every import of a lorakit module by a lorakit module, with the names taken from it."""
    known = modules(root)
    found = []
    for importer, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        aliases = {}  # local name → lorakit module, for ``module._x`` reads
        for node in ast.walk(tree):
            runs = id(node) not in typing_only
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known:
                        found.append(Import(importer, node.lineno, alias.name, runs=runs))
                        aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(importer, path, node)
                if source not in known:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in known:  # ``from pkg import submodule``
                        found.append(Import(importer, node.lineno, sub, runs=runs))
                        aliases[alias.asname or alias.name] = sub
                    else:
                        found.append(Import(importer, node.lineno, source, alias.name, runs=runs))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                found.append(Import(importer, node.lineno, aliases[node.value.id], node.attr))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def graph(root: Path) -> nx.DiGraph:
    """The module import graph: every import that runs (lazy ones included)."""
    g = nx.DiGraph()
    g.add_nodes_from(modules(root))
    g.add_edges_from(
        (i.importer, i.module) for i in imports(root) if i.runs and i.importer != i.module
    )
    return g


def circles(g: nx.DiGraph) -> list[list[str]]:
    """Import circles: strongly connected components with more than one module, largest first."""
    found = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    return sorted(found, key=lambda c: (-len(c), c))


def _package(module: str, known) -> str:
    return module if _is_package(known[module]) else module.rpartition(".")[0]


def private_imports(root: Path) -> list[Import]:
    """Private names taken from another module, and private modules imported from outside their
    package (``lorakit._validation`` is lorakit's own; ``lorakit.zoo._cache`` is the zoo's)."""
    found = []
    for i in imports(root):
        if i.module == i.importer:
            continue
        if i.name is not None and _private(i.name):
            found.append(i)
            continue
        owner, _, last = i.module.rpartition(".")
        inside = i.importer == owner or i.importer.startswith(owner + ".")
        if _private(last) and not inside:
            found.append(Import(i.importer, i.line, i.module))
    return sorted(set(found), key=lambda i: (i.importer, i.line, i.module, i.name or ""))


def across_packages(found: list[Import], root: Path) -> list[Import]:
    """The subset of ``found`` whose importer sits in another package than the module."""
    known = modules(root)
    return [i for i in found if _package(i.importer, known) != _package(i.module, known)]


def engine_adapter_imports(root: Path) -> list[Import]:
    """Imports of ``lorakit.adapters`` (or a module under it) by an engine module."""

    def under(module, prefixes):
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    found = {
        Import(i.importer, i.line, i.module)
        for i in imports(root)
        if under(i.importer, ENGINES) and under(i.module, ("lorakit.adapters",))
    }
    return sorted(found, key=lambda i: (i.importer, i.line, i.module))


def report(root: Path) -> str:
    """The text ``python tests/layering.py`` prints."""
    g = graph(root)
    lines = [f"lorakit under {root}: {g.number_of_nodes()} modules, {g.number_of_edges()} imports"]
    found = circles(g)
    lines.append(f"\nimport circles: {len(found)}")
    for members in found:
        lines.append(f"  {len(members)} modules: {', '.join(members)}")
        cycle = nx.find_cycle(g.subgraph(members))
        lines.append("    e.g. " + " → ".join([a for a, _ in cycle] + [cycle[0][0]]))
    private = private_imports(root)
    crossing = across_packages(private, root)
    lines.append(
        f"\nprivate names imported across modules: {len(private)} ({len(crossing)} across packages)"
    )
    lines += [f"  {i}{'  [across packages]' if i in crossing else ''}" for i in private]
    engines = engine_adapter_imports(root)
    lines.append(f"\nengine modules importing lorakit.adapters: {len(engines)}")
    lines += [f"  {i}" for i in engines]
    return "\n".join(lines)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print(report(root.resolve()))
