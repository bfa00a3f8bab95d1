"""The package's layers, checked on its source with Python's `ast` (diffusers' check_copies idea):
imports point down, never up; no import cycle; no hidden function-local import of an audiodiff
module outside a face; modules and functions stay short enough to read.

    faces     train generate edit app evaluate prepare launch datasets/*   (python -m; argparse/Hydra; one-line errors)
    training  train_diffusion train_logging train_vocoder train_classifier optim
    inference pipeline editing outputs hub fast
    parts     diffusion/ nets/ vocoders data metrics clipsets regions pages config
    base      audio manifest atomic checkpoint runtime cli install bundled version

The rules are functions of a module tree, so the same checks run on a small synthetic tree that
breaks each rule on purpose (the last tests): they fail there, which shows they can fail here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "audiodiff"

LAYERS = {  # module (dotted, without "audiodiff.") -> layer; packages by prefix
    "version": 0, "install": 0, "cli": 0, "atomic": 0, "runtime": 0, "audio": 0, "manifest": 0, "checkpoint": 0,
    "bundled": 0,
    "diffusion": 1, "nets": 1, "vocoders": 1, "data": 1, "metrics": 1, "config": 1, "clipsets": 1, "regions": 1,
    "pages": 1,
    "fast": 2, "hub": 2, "pipeline": 2, "outputs": 2, "editing": 2,
    "optim": 3, "train_diffusion": 3, "train_logging": 3, "train_vocoder": 3, "train_classifier": 3,
    "train": 4, "generate": 4, "edit": 4, "app": 4, "evaluate": 4, "prepare": 4, "launch": 4, "datasets": 4,
    "": 5,  # the package root (audiodiff/__init__.py): the public API, above everything
}
LAYER_NAMES = ("base", "parts", "inference", "training", "faces", "package")
FACES = {"train", "generate", "evaluate", "prepare", "launch", "edit", "app"}  # and every datasets.* module
MAX_MODULE_LINES = 400
LONGER_MODULES = {"prepare": 700}  # its length is the bad-audio handling the reliability goals need
MAX_FUNCTION_LINES = 80
LONGER_FUNCTIONS = {  # the training loops read top to bottom (EDM's training_loop is 190 lines)
    "train_diffusion.train_diffusion": 190, "train_vocoder.train_vocoder": 190,
    "train_classifier.train_classifier": 130, "nets.unet.UNet.__init__": 100,
}


def layer_of(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or (prefix and module.startswith(prefix + ".")):
            return LAYERS[prefix]
    raise KeyError(f"audiodiff.{module} has no layer: add it to LAYERS in tests/test_layers.py")


def is_face(module: str) -> bool:
    return module in FACES or module.startswith("datasets.")


def modules(root: Path, package: str = "audiodiff") -> dict[str, ast.Module]:
    """{dotted name without the package prefix: parsed tree} of every .py file under root."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ImportFrom names, relative to `module`."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(["audiodiff", *base, *([node.module] if node.module else [])]).rstrip(".")


def imports(tree: ast.Module, module: str, is_package: bool, package: str = "audiodiff"):
    """[(target module without the package prefix, line, inside a function name or None)]."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = f"{function}.{child.name}" if function else child.name
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, child, is_package)
                # `from audiodiff import fast` names a module; `from .x import y` names x
                names = [f"{base}.{a.name}" if base == package else base for a in child.names]
            else:
                names = []
            for name in names:
                if name == package or name.startswith(package + "."):
                    found.append((name[len(package) + 1:], child.lineno, function))
            visit(child, inner)

    visit(tree, None)
    return found


def known(name: str, trees: dict) -> str:
    """The longest known module that `name` is or lies in (`diffusion.samplers.SAMPLERS` -> the module)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in trees:
        parts.pop()
    return ".".join(parts)


def edges(trees: dict, packages: set[str]):
    for module, tree in trees.items():
        for target, line, function in imports(tree, module, module in packages):
            yield module, known(target, trees), line, function


def violations(trees: dict, packages: set[str], source_lines: dict[str, int]) -> list[str]:
    """Every broken rule, one line each."""
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in trees}
    local_by_face: dict[str, set[str]] = {}
    for module, target, line, function in edges(trees, packages):
        if target == module:
            continue
        graph[module].add(target)
        if layer_of(target) > layer_of(module):
            problems.append(f"{module}:{line} imports {target or 'audiodiff'}: up from "
                            f"{LAYER_NAMES[layer_of(module)]} to {LAYER_NAMES[layer_of(target)]}")
        if function is not None:
            if is_face(module):
                local_by_face.setdefault(module, set()).add(function.split(".")[0])
            elif module != "":  # the package root's lazy __getattr__ is its public API
                problems.append(f"{module}:{line} imports {target} inside {function}(); import it at the top")
    for module, functions in local_by_face.items():
        if len(functions) > 1:
            names = ", ".join(sorted(functions))
            problems.append(f"{module}: deferred imports in {len(functions)} functions ({names}); "
                            "a face defers its library imports in one block")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for module, n in source_lines.items():
        limit = LONGER_MODULES.get(module, MAX_MODULE_LINES)
        if n > limit:
            problems.append(f"{module}: {n} lines > {limit}")
    for module, tree in trees.items():
        for name, n in function_lengths(tree):
            key = f"{module}.{name}" if module else name
            limit = LONGER_FUNCTIONS.get(key, MAX_FUNCTION_LINES)
            if n > limit:
                problems.append(f"{key}: {n} lines > {limit}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative path per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def function_lengths(tree: ast.Module):
    """(qualified name, lines from the first decorator to the end) of every function and method."""
    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                yield f"{prefix}{child.name}", child.end_lineno - start + 1
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")

    yield from visit(tree, "")


def check_tree(root: Path) -> list[str]:
    trees = modules(root)
    packages = {m for m in trees if (root / m.replace(".", "/") / "__init__.py").exists() or m == ""}
    lines = {}
    for m in trees:
        path = root / (m.replace(".", "/") + ".py") if m not in packages else root / m.replace(".", "/") / "__init__.py"
        lines[m] = len(path.read_text().splitlines())
    return violations(trees, packages, lines)


def test_the_package_keeps_its_layers():
    problems = check_tree(PACKAGE)
    assert not problems, "\n" + "\n".join(problems)


def test_every_module_has_a_layer():
    for module in modules(PACKAGE):
        layer_of(module)  # KeyError names a module the layer map forgot


# ----------------------------------------------------------------------------- the rules can fail

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "audiodiff"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


GOOD = {"audio.py": "import os\n", "data.py": "from .audio import os\n", "pipeline.py": "from .data import x\n",
        "generate.py": "def main():\n    from audiodiff.pipeline import x\n"}


def test_a_clean_synthetic_tree_passes(tmp_path):
    assert check_tree(_tree(tmp_path, GOOD)) == []


@pytest.mark.parametrize("change,expected", [
    ({"audio.py": "from audiodiff.pipeline import x\n"}, "audio:1 imports pipeline: up from base to inference"),
    ({"data.py": "from . import pipeline\n"}, "data:1 imports pipeline: up from parts to inference"),
    ({"pipeline.py": "def f():\n    from .data import x\n"},
     "pipeline:2 imports data inside f(); import it at the top"),
    ({"audio.py": "from .checkpoint import x\n", "checkpoint.py": "from .audio import y\n"},
     "import cycle: audio -> checkpoint -> audio"),
    ({"generate.py": "def a():\n    from .pipeline import x\ndef b():\n    from .data import y\n"},
     "generate: deferred imports in 2 functions (a, b)"),
    ({"data.py": "x = 1\n" * 401}, "data: 401 lines > 400"),
    ({"data.py": "def f():\n" + "    x = 1\n" * 80}, "data.f: 81 lines > 80"),
])
def test_each_rule_fails_on_a_tree_that_breaks_it(tmp_path, change, expected):
    problems = check_tree(_tree(tmp_path, {**GOOD, **change}))
    assert any(p.startswith(expected) for p in problems), problems
