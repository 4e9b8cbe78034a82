"""The package's shape: imports only flow one way along the pipeline, no cycles, and the public surface is listed."""

import ast
import importlib
from pathlib import Path

import pytest

import tfspeed

ROOT = Path(tfspeed.__file__).parent

# Left to right: a module may import modules of its own layer or of a layer to its left, never one to its right.
# `profile` measures any model file and needs nothing of tfspeed but the foundation, so it sits left of `export`,
# whose accuracy budget ranks candidate files by measured latency.
LAYERS = [
    ("compat", "runtime", "_io", "_checks", "_wheels", "config", "registry", "distribute", "clock"),
    ("models",),
    ("data", "hub"),
    ("train",),
    ("compress",),
    ("artifacts",),
    ("profile",),
    ("export",),
    ("stages",),
    ("recipe",),
    ("cli",),
    ("__init__",),  # the package facade: `tfspeed.prune`, `tfspeed.qat_fit`, ... (lazy)
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
# Modules exempt from the rule: none. (The deprecated aliases kept for one release, `tfspeed.compress.prune` / `.qat` /
# `.distill` and `tfspeed.train.finetune`, reach their new homes by name through importlib when they are used.)
DEPRECATED_ALIASES = set()


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path):
    """(imported tfspeed module, line) for every import statement, at module level or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tfspeed":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "tfspeed":
                continue
            for alias in node.names:  # `from tfspeed import export` imports the module tfspeed.export
                candidate = f"{base}.{alias.name}"
                path_of = ROOT.parent / Path(*candidate.split("."))
                is_module = path_of.exists() or path_of.with_suffix(".py").exists()
                yield (candidate if is_module else base), node.lineno


def test_every_module_sits_in_a_layer():
    unknown = sorted({_area(m) for m, _ in _modules()} - set(RANK))
    assert not unknown, f"modules outside LAYERS: {unknown}: add them to the layer they belong to"


def test_imports_flow_one_way():
    wrong = []
    for module, path in _modules():
        if module in DEPRECATED_ALIASES:
            continue
        for target, line in _imports(module, path):
            if target == "tfspeed":
                target = "tfspeed.__init__"
            if RANK[_area(target)] > RANK[_area(module)]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} ({_area(module)}) imports {target} "
                             f"({_area(target)}), a later stage")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: set() for m, _ in _modules()}
    for module, path in _modules():
        for target, _ in _imports(module, path):
            while target not in graph and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in graph and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    cycles = [c for c in cycles if not set(c) & DEPRECATED_ALIASES]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_rule_catches_a_backward_import(tmp_path):
    """The checker itself: a module of `models` importing `export` is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tfspeed.export import convert\n")
    (target, _), = _imports("tfspeed.models.bad", bad)
    assert RANK[_area(target)] > RANK[_area("tfspeed.models.bad")]


def test_public_surface_is_listed_and_importable():
    assert len(tfspeed.__all__) == len(set(tfspeed.__all__))
    for name in tfspeed.__all__:
        assert getattr(tfspeed, name) is not None, name
    for verb in ("prune", "strip", "quantize", "qat_fit", "distill", "Distiller", "convert", "profile_models",
                 "optimize", "PruneConfig", "QATConfig", "DistillConfig", "ExportConfig", "ProfileConfig",
                 "FinetuneConfig", "StructuredConfig", "RecipeConfig"):
        assert verb in tfspeed.__all__, verb


@pytest.mark.parametrize("package", ["tfspeed.compress", "tfspeed.export", "tfspeed.profile", "tfspeed.models",
                                     "tfspeed.data", "tfspeed.hub", "tfspeed.stages", "tfspeed.recipe"])
def test_package_all_names_exist(package):
    mod = importlib.import_module(package)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{package}.__all__ lists missing names {missing}"
