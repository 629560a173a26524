"""lorakit's layering (README "Architecture"): no import circles, no private name taken from another
module, no engine importing the model-scale layer. ``python tests/layering.py`` prints the lists."""

from pathlib import Path

import networkx as nx
from layering import (
    Import,
    across_packages,
    circles,
    engine_adapter_imports,
    graph,
    imports,
    private_imports,
)

ROOT = Path(__file__).resolve().parents[1]


def _listing(found) -> str:
    return "\n".join(str(item) for item in found)


def test_no_import_circle():
    found = circles(graph(ROOT))
    assert found == [], "import circles (python tests/layering.py):\n" + "\n".join(
        ", ".join(members) for members in found
    )


def test_no_private_name_imported_across_modules():
    found = private_imports(ROOT)
    assert found == [], "private names imported across modules:\n" + _listing(found)


def test_no_engine_imports_the_adapters():
    found = engine_adapter_imports(ROOT)
    assert found == [], "engine modules importing lorakit.adapters:\n" + _listing(found)


# -- the checker itself, on a made-up package -------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_sees_lazy_circles_private_names_and_engine_imports(tmp_path):
    root = _write(
        tmp_path,
        {
            "lorakit/__init__.py": "from . import chain\n",
            "lorakit/chain.py": "def run():\n    from .adapters import twin\n",
            "lorakit/adapters/__init__.py": "",
            "lorakit/adapters/twin.py": "from ..chain import _helper\nfrom .. import chain\n",
            "lorakit/zoo/__init__.py": "",
            "lorakit/zoo/_cache.py": "",
            "lorakit/widgets/__init__.py": "from ..zoo import _cache\nfrom .. import chain\n"
            "chain._private()\n",
            "lorakit/_validation.py": "",
            "lorakit/local.py": "from ._validation import check\n",
            "lorakit/tree.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .adapters.twin import Site\n",
            "lorakit/adapters/sites.py": "from ..tree import leaves\n",
        },
    )
    g = graph(root)
    assert ("lorakit.chain", "lorakit.adapters.twin") in g.edges  # the lazy import is an edge
    assert circles(g) == [["lorakit.adapters.twin", "lorakit.chain"]]
    assert nx.is_directed_acyclic_graph(g.subgraph(set(g) - {"lorakit.chain"}))
    private = private_imports(root)
    assert {(i.importer, i.module, i.name) for i in private} == {
        ("lorakit.adapters.twin", "lorakit.chain", "_helper"),
        ("lorakit.widgets", "lorakit.zoo._cache", None),  # a zoo-private module
        ("lorakit.widgets", "lorakit.chain", "_private"),  # read off an imported module
    }  # lorakit._validation is lorakit's own: lorakit.local may use it
    assert {i.importer for i in across_packages(private, root)} == {
        "lorakit.adapters.twin",
        "lorakit.widgets",
    }
    # a type-only import closes no circle (it never runs), but an engine may not make it
    assert ("lorakit.tree", "lorakit.adapters.twin") not in g.edges
    assert engine_adapter_imports(root) == [
        Import("lorakit.chain", 2, "lorakit.adapters.twin"),
        Import("lorakit.tree", 3, "lorakit.adapters.twin"),
    ]
    assert Import("lorakit", 1, "lorakit.chain") in imports(root)
