"""``osrbench.metrics``, ``osrbench.protocols`` and ``osrbench.registry`` work where torch cannot be
imported (DESIGN.md: they know nothing of torch training), and the package's public names are lazy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import osrbench

PACKAGE = Path(osrbench.__file__).resolve().parent

# Runs in a fresh interpreter: any import of torch or torchvision raises ImportError.
BLOCKED = textwrap.dedent(
    """
    import json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)


def _run_without_torch(body: str) -> dict:
    code = BLOCKED + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_blocker_really_blocks_torch():
    out = _run_without_torch(
        """
        try:
            import torch
        except ImportError:
            blocked = True
        else:
            blocked = False
        print(json.dumps({"blocked": blocked}))
        """
    )
    assert out == {"blocked": True}


def test_metrics_protocols_and_registry_import_and_work_without_torch():
    out = _run_without_torch(
        """
        import osrbench.metrics as metrics
        import osrbench.protocols as protocols
        import osrbench.registry as registry

        res = metrics.evaluate([0.9, 0.8, 0.6, 0.3], [0, 1, 0, 3], [0, 1, 2, 3], [0.7, 0.4, 0.2],
                               unknown_preds=[1, 0, 2], f1_threshold=0.5)
        spec = {s.name: s for s in registry.builtin_datasets()}["digits"]
        split = protocols.get_split(spec, "auroc", 0)
        import osrbench
        print(json.dumps({
            "metrics": sorted(res), "auroc": res["auroc"],
            "known": list(split.known), "unknown": list(split.unknown), "hash": split.hash,
            "n_splits": protocols.num_splits(spec, "auroc"),
            "version": osrbench.__version__, "hookimpl": callable(osrbench.hookimpl),
            "torch": sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision")),
        }))
        """
    )
    from osrbench import metrics, protocols, registry

    assert out["torch"] == []
    assert out["metrics"] == sorted(metrics.METRICS)
    assert out["auroc"] == metrics.auroc([0.9, 0.8, 0.6, 0.3], [0.7, 0.4, 0.2]) == 9 / 12
    spec = {s.name: s for s in registry.builtin_datasets()}["digits"]
    want = protocols.get_split(spec, "auroc", 0)
    assert (tuple(out["known"]), tuple(out["unknown"]), out["hash"]) == (want.known, want.unknown, want.hash)
    assert out["n_splits"] == 5
    assert out["version"] == osrbench.__version__ and out["hookimpl"]


def test_public_names_are_lazy_and_only_the_torch_ones_need_torch():
    out = _run_without_torch(
        """
        import osrbench
        from osrbench import hookimpl
        spec_ok = osrbench.DatasetSpec.__name__  # datasets needs no torch to import
        try:
            from osrbench import MethodSpec
        except ImportError as exc:
            method = "ImportError"
        else:
            method = "imported"
        print(json.dumps({"spec": spec_ok, "method": method, "dir": sorted(set(osrbench.__all__) - set(dir(osrbench)))}))
        """
    )
    assert out == {"spec": "DatasetSpec", "method": "ImportError", "dir": []}


def test_every_public_name_resolves():
    from osrbench import MethodSpec, OpenSetData
    from osrbench.datasets import OpenSetData as data_cls
    from osrbench.method import MethodSpec as spec_cls

    assert MethodSpec is spec_cls and OpenSetData is data_cls
    for name in osrbench.__all__:
        assert getattr(osrbench, name) is not None, name
    assert osrbench.__version__ and callable(osrbench.hookimpl)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        osrbench.nope  # noqa: B018
    from osrbench import metrics  # a submodule still imports through ``from osrbench import``

    assert metrics.__name__ == "osrbench.metrics"


# --------------------------------------------------------------------------------- import cycles


def _runtime_imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """osrbench modules that ``module`` imports at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for inner in child.orelse:
                    visit_one(inner)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != module}


def _import_graph() -> dict[str, set[str]]:
    paths = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        paths[".".join(parts)] = path
    graph = {m: _runtime_imports(m, p, set(paths)) for m, p in paths.items()}
    graph["osrbench"] |= set(osrbench._LAZY.values())  # imported by the package's __getattr__
    return graph


def _reaches(graph: dict[str, set[str]], start: str, target: str) -> bool:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m == target:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


@pytest.mark.parametrize("module", ["osrbench", "osrbench.metrics", "osrbench.protocols", "osrbench.registry",
                                    "osrbench.datasets"])
def test_core_modules_are_in_no_import_cycle(module):
    graph = _import_graph()
    assert module in graph
    assert not _reaches(graph, module, module), f"{module} imports a module that imports it back"
