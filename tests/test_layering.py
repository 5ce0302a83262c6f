"""The import rules between herd's layers, checked on the source (an `ast` walk; nothing is imported).

Layers, bottom up: core (`herd.model`, `herd.tokenizer`, `herd.checkpoint`) -> stages (`herd.data`,
`herd.train`, `herd.infer`, `herd.serve`, ...) -> facade (`herd/__init__.py`, `herd.loading`) and the
command line (`herd.cli`, `herd.commands`, every `*cli` module). The walk sees every import statement,
including those inside functions and `if TYPE_CHECKING:` blocks, `importlib.import_module("herd...")` /
`__import__("herd...")` with a literal name, and any string constant that is exactly the dotted name of
a herd module (how `herd/cli.py` lists its command modules). Rules:

- core imports only core (no stage, no facade, no command line) and holds no command-line module;
- `herd.infer` and `herd.serve` never import `herd.train`; `herd.data` never imports `herd.train` or
  `herd.serve`;
- no import cycle that crosses a package boundary: within every package the direct children are the
  nodes (a subpackage taken whole), so `herd.data` <-> `herd.eval` is a cycle, and so is
  `herd.train.parallel` <-> any `herd.train` module (herd.train.parallel builds on herd.train's
  config, checkpointing, init, loss and optim; only the trainer and the commands above it import
  herd.train.parallel). Type-only imports never run and make no cycle.
- every third-party import is installed by the core dependencies or by the package's extra
  (pyproject.toml).

`python tests/test_layering.py` prints the violations of the working tree.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "herd"

CORE = ("herd.model", "herd.tokenizer", "herd.checkpoint")
STAGES = ("herd.data", "herd.train", "herd.infer", "herd.serve", "herd.eval", "herd.post", "herd.tools",
          "herd.safety", "herd.scaling", "herd.multimodal", "herd.experts", "herd.sandbox")
FACADE = ("herd", "herd.loading")
# A package -> the packages it must never import (beyond the core rule).
FORBIDDEN = {
    "herd.infer": ("herd.train",),
    "herd.serve": ("herd.train",),
    "herd.data": ("herd.train", "herd.serve"),
}


@dataclass(frozen=True)
class Import:
    importer: str  # module that imports
    target: str  # herd module imported (the most specific existing module)
    line: int
    type_only: bool  # inside `if TYPE_CHECKING:`

    def where(self, root: Path) -> str:
        return f"{module_file(root, self.importer)}:{self.line}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_cli(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module in ("herd.cli", "herd.__main__") or within(module, "herd.commands") or last == "cli" \
        or last.endswith("_cli") or last.startswith("cli_")


def module_file(root: Path, module: str) -> str:
    rel = Path(*module.split(".")[1:])
    path = root / rel / "__init__.py" if (root / rel).is_dir() else root / rel.with_suffix(".py")
    return str(path.relative_to(root.parent))


def discover(root: Path) -> dict[str, Path]:
    """Every module under `root` (the `herd` package directory) by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([root.name, *parts])] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a herd module (None: not herd)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def found(name: str, line: int) -> Iterator[Import]:
        target = _resolve(name, modules)
        if target is not None and target != module:
            yield Import(module, target, line, line in type_only)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from found(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                yield from found(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                yield from found(node.args[0].value, node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules \
                and node.value != module:
            yield from found(node.value, node.lineno)


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = discover(root)
    seen: set[tuple[str, str, int]] = set()
    result = []
    for module, path in modules.items():
        for imp in imports_of(module, path, modules):
            if (imp.importer, imp.target, imp.line) not in seen:
                seen.add((imp.importer, imp.target, imp.line))
                result.append(imp)
    return result


def layer_violations(imports: Iterable[Import], modules: Iterable[str], root: Path = ROOT) -> list[str]:
    problems = []
    for module in modules:
        if any(within(module, c) for c in CORE) and is_cli(module):
            problems.append(f"{module_file(root, module)}: a command-line module inside core ({module}); "
                            "commands belong to the command-line layer")
    for imp in imports:
        src, dst = imp.importer, imp.target
        if any(within(src, c) for c in CORE) and not any(within(dst, c) for c in CORE):
            kind = ("the facade" if dst in FACADE else "the command line" if is_cli(dst)
                    else "a stage" if any(within(dst, s) for s in STAGES) else "a module above core")
            problems.append(f"{imp.where(root)}: core module {src} imports {kind} ({dst}); "
                            f"core ({', '.join(CORE)}) may import only core")
        for package, banned in FORBIDDEN.items():
            if within(src, package):
                for b in banned:
                    if within(dst, b):
                        problems.append(f"{imp.where(root)}: {src} imports {dst}; {package} must never import {b}")
    return problems


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components with more than one node, or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                components.append(sorted(component))
    return components


def _child(module: str, package: str) -> str:
    """The direct child of `package` that holds `module` (`package` itself for its __init__)."""
    rest = module[len(package) + 1:].split(".", 1)[0] if module != package else ""
    return f"{package}.{rest}" if rest else package


def cycle_violations(imports: Iterable[Import], modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Cycles that cross a package boundary, each with one importing line per edge in the cycle.

    For every package, its direct children (modules, and subpackages taken whole) are the nodes, and
    an import between two of them is an edge; a strongly connected component that holds a
    subpackage is a cycle between packages (`herd.data` <-> `herd.eval`, or `herd.train.parallel` <->
    `herd.train.trainer`). Cycles among the plain modules of one package are that package's business.
    """
    imports = [i for i in imports if not i.type_only]  # never executed: cannot make an import cycle
    packages = [m for m, path in modules.items() if path.name == "__init__.py"]
    problems = []
    for package in sorted(packages):
        graph: dict[str, set[str]] = {}
        example: dict[tuple[str, str], Import] = {}
        for imp in imports:
            if not (within(imp.importer, package) and within(imp.target, package)):
                continue
            a, b = _child(imp.importer, package), _child(imp.target, package)
            if a == b or a == package:  # a package's __init__ re-exports its children (lazily or not)
                continue
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
            example.setdefault((a, b), imp)
        for component in _strongly_connected(graph):
            if len(component) < 2 or not any(modules[c].name == "__init__.py" for c in component):
                continue
            members = set(component)
            edges = [f"{a} -> {b} ({example[(a, b)].where(root)})"
                     for a in component for b in sorted(graph[a] & members)]
            problems.append(f"import cycle between {', '.join(component)}: " + "; ".join(edges))
    return problems


def check(root: Path = ROOT) -> list[str]:
    imports = all_imports(root)
    modules = discover(root)
    return layer_violations(imports, modules, root) + cycle_violations(imports, modules, root)


# ---- the rules hold for herd ----------------------------------------------------------------------


def test_herd_keeps_its_layers() -> None:
    problems = layer_violations(all_imports(), discover(ROOT))
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_packages() -> None:
    problems = cycle_violations(all_imports(), discover(ROOT))
    assert not problems, "\n".join(problems)


def test_the_walk_sees_herd() -> None:
    """A walk that found nothing would pass every rule: it must see the imports that are known to be there."""
    imports = all_imports()
    pairs = {(i.importer, i.target) for i in imports}
    assert len(discover(ROOT)) > 50
    assert ("herd.loading", "herd.checkpoint.formats") in pairs
    assert any(src == "herd.cli" and within(dst, "herd.infer") for src, dst in pairs)  # string literals


# ---- the checker catches planted breaches -----------------------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "herd" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "herd"


BASE = {
    "__init__.py": "",
    "loading.py": "from herd.model import core\n",
    "cli.py": "COMMANDS = ('herd.infer.cli',)\n",
    "model/__init__.py": "",
    "model/core.py": "import torch\n",
    "tokenizer/__init__.py": "",
    "checkpoint/__init__.py": "from herd.model import core\n",
    "infer/__init__.py": "",
    "infer/cli.py": "from herd.loading import load_model\n",
    "train/__init__.py": "",
    "train/trainer.py": "from herd.train.parallel import plan\n",
    "train/parallel/__init__.py": "",
    "train/parallel/plan.py": "import herd.model.core\n",
    "data/__init__.py": "",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check(_plant(tmp_path, BASE)) == []


def test_a_function_local_import_of_a_stage_from_core_is_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {**BASE, "model/core.py": """
        def load():
            from herd.train import trainer
            return trainer
    """})
    layers, cycles = check(root)  # the breach, and the cycle it makes (herd.train already imports herd.model)
    assert layers.startswith("herd/model/core.py:3: core module herd.model.core imports a stage (herd.train.trainer)")
    assert cycles.startswith("import cycle between herd.model, herd.train")


def test_core_importing_the_facade_and_holding_a_cli_is_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {**BASE, "checkpoint/cli.py": """
        def run(args):
            from herd.loading import resolve_spec
    """})
    problems = check(root)
    assert any("a command-line module inside core (herd.checkpoint.cli)" in p for p in problems)
    assert any("imports the facade (herd.loading)" in p for p in problems)


def test_relative_and_importlib_imports_are_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {**BASE,
                             "infer/engine.py": "from ..train import trainer\n",
                             "data/loader.py": "import importlib\nimportlib.import_module('herd.serve.app')\n",
                             "serve/__init__.py": "", "serve/app.py": "X = 1\n"})
    problems = check(root)
    assert any("herd.infer.engine imports herd.train.trainer; herd.infer must never import herd.train" in p
               for p in problems)
    assert any("herd.data.loader imports herd.serve.app; herd.data must never import herd.serve" in p
               for p in problems)


def test_cycles_are_caught_between_packages_and_train_parallel(tmp_path: Path) -> None:
    root = _plant(tmp_path, {**BASE,
                             "train/parallel/plan.py": "from herd.train import trainer\n",
                             "data/mix.py": "from herd.eval import niah\n",
                             "eval/__init__.py": "", "eval/niah.py": "def f():\n    import herd.data.mix\n"})
    problems = check(root)
    assert any(p.startswith("import cycle between herd.train.parallel, herd.train.trainer") for p in problems), problems
    assert any(p.startswith("import cycle between herd.data, herd.eval") and "herd/eval/niah.py:2" in p
               for p in problems), problems
    # a type-only import never runs, so it makes no cycle
    root = _plant(tmp_path, {"eval/niah.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                             "    import herd.data.mix\n"})
    assert not [p for p in check(root) if "herd.data, herd.eval" in p]


# ---- packaging: every third-party import is installed by the core dependencies or the package's extra ----

EXTRA_OF_PACKAGE = {"herd.serve": "serve", "herd.data": "data", "herd.train": "train", "herd.eval": "eval",
                    "herd.post.chatdata": "post", "herd.post.demo": "post", "herd.safety": "safety",
                    "herd.scaling": "scaling", "herd.multimodal": "multimodal"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def third_party_imports(root: Path = ROOT) -> Iterator[tuple[str, str, int]]:
    """(herd module, top-level third-party module, line) for every import outside the stdlib and herd."""
    for module, path in discover(root).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("herd", "__future__"):
                    yield module, top, node.lineno


def test_every_import_is_covered_by_core_or_its_extra() -> None:
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    assert {"serve", "data", "train", "eval", "test", "all"} <= set(extras)
    assert set(project["optional-dependencies"]["all"][0].partition("[")[2].rstrip("]").split(",")) == \
        set(EXTRA_OF_PACKAGE.values())
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for module, top, line in third_party_imports():
        extra = next((e for p, e in EXTRA_OF_PACKAGE.items() if within(module, p)), None)
        allowed = core | extras.get(extra, set())
        if extra == "data" and top == "ray":  # the Ray executor: its own extra, too large for [all]
            allowed = allowed | extras["ray"]
        names = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
        if not names & allowed:
            problems.append(f"{module_file(ROOT, module)}:{line}: imports {top} (distribution {', '.join(sorted(names))})"
                            f", which neither the core dependencies nor [{extra or 'core'}] install")
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    found = check()
    print("\n".join(found) or "no layering violations")
    sys.exit(1 if found else 0)
