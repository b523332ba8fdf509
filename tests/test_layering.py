"""The package's layers: no module imports one of a higher layer, and no imports go round in a circle.

Layers are named by the top-level module or package under clip_train/, lowest first; a module may
import its own layer and those below. Imports are read with `ast` from the source, those inside
functions too (a lazy import is still an arrow). A new top-level module must be given a layer here.
"""

import ast
import os

import clip_train

LAYERS = [
    # foundations: no model, no data
    {"paths", "cache_folder", "distributed", "shard_patterns", "machine_defaults"},
    {"data"},
    {"model", "recipe", "checkpoint_file"},
    {"objectives"},
    # using a trained model, without Lightning
    {"inference", "text_classifier"},
    # measuring and moving models: built on inference
    {"eval", "interop"},
    # training (the config check, which knows the run's length rules, and build, what one group hands another):
    # validation reports eval's retrieval metrics, a run may start from interop's weights
    {"training", "train", "config", "build"},
    # entry points and the public API
    {
        "__init__",
        "__main__",
        "cli",
        "compose_only",
        "config_reference",
        "override_check",
        "evaluate",
        "export",
        "curate",
        "curation",
        "caption",
        "index",
        "multirun_summary",
        "wise_ft",
        "vlm",
    },
]
PACKAGE = os.path.dirname(clip_train.__file__)


def module_names() -> dict[str, str]:
    """{dotted module name: file path} of every module of the package."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE)).removesuffix(".py").split(os.sep)
                modules[".".join(parts).removesuffix(".__init__")] = path
    return modules


def imports(path: str, modules: set[str]) -> set[str]:
    """The package modules `path` imports; `from clip_train.data import tokenizer` names the submodule."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            assert node.level == 0, f"{path}: relative import"
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names)
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"clip_train.{top} has no layer: declare it in tests/test_layering.py LAYERS")


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {module: imports(path, set(modules)) - {module} for module, path in modules.items()}


def test_no_import_points_to_a_higher_layer():
    upward = [
        f"{module} (layer {layer(module)}) -> {target} (layer {layer(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    done, on_path = set(), []

    def visit(module: str) -> None:
        if module in on_path:
            raise AssertionError("import cycle: " + " -> ".join([*on_path[on_path.index(module) :], module]))
        if module in done:
            return
        on_path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        on_path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_check_sees_lazy_and_submodule_imports():
    graph = import_graph()
    assert "clip_train.inference" in graph["clip_train"]  # imported inside __getattr__
    assert "clip_train.data.tokenizer" in graph["clip_train.inference"]
