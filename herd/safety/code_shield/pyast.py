"""The parsed view of a Python source that the AST matchers share: one parse, one walk.

Matchers ask "is this call `subprocess.run`?" whatever the import spelling (`import subprocess as sp`,
`from subprocess import run`), so the context resolves names through the module's imports once and
records each node's parent (matchers need the assignment or function a call sits in)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


@dataclass
class PyContext:
    """A parsed module: its calls, assignments, import aliases and a parent map."""

    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)
    calls: list[ast.Call] = field(default_factory=list)
    assigns: list[ast.Assign | ast.AnnAssign] = field(default_factory=list)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    nodes: list[ast.AST] = field(default_factory=list)

    @classmethod
    def parse(cls, code: str) -> PyContext:
        """Parse `code` (raises SyntaxError/ValueError when it is not Python) and index it."""
        tree = ast.parse(code)
        ctx = cls(tree)
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                ctx.parents[child] = parent
            ctx.nodes.append(parent)
            if isinstance(parent, ast.Call):
                ctx.calls.append(parent)
            elif isinstance(parent, (ast.Assign, ast.AnnAssign)):
                ctx.assigns.append(parent)
            elif isinstance(parent, ast.Import):
                for a in parent.names:
                    # `import a.b` binds `a`; `import a.b as c` binds c -> a.b
                    if a.asname:
                        ctx.aliases[a.asname] = a.name
                    else:
                        head = a.name.split(".")[0]
                        ctx.aliases[head] = head
            elif isinstance(parent, ast.ImportFrom) and parent.module and not parent.level:
                for a in parent.names:
                    ctx.aliases[a.asname or a.name] = f"{parent.module}.{a.name}"
        return ctx

    def qualname(self, node: ast.AST) -> str:
        """Dotted name of a Name/Attribute chain with import aliases resolved ('' if not a name)."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else ""
        if isinstance(node, ast.Call):  # e.g. `requests.Session().get` -> requests.Session().get
            base = self.qualname(node.func)
            return f"{base}()" if base else ""
        return ""

    def call_name(self, call: ast.Call) -> str:
        """The resolved dotted name of the function a call invokes."""
        return self.qualname(call.func)

    def imports(self, module: str) -> bool:
        """Whether the module imports `module` (or something from it) under any name."""
        return any(v == module or v.startswith(module + ".") for v in self.aliases.values())

    def enclosing(self, node: ast.AST, kinds: tuple[type, ...]) -> ast.AST | None:
        """The nearest ancestor of one of `kinds`, or None."""
        cur = self.parents.get(node)
        while cur is not None and not isinstance(cur, kinds):
            cur = self.parents.get(cur)
        return cur


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    """The value of keyword argument `name`, or None when it is not passed."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def arg(call: ast.Call, position: int, name: str | None = None) -> ast.expr | None:
    """Argument by position, else by keyword `name` (how most APIs allow either spelling)."""
    if len(call.args) > position and not isinstance(call.args[position], ast.Starred):
        return call.args[position]
    return keyword(call, name) if name else None


def is_const(node: ast.AST | None, *values: object) -> bool:
    """Whether node is a constant (any constant when no values are given, else one of them)."""
    if not isinstance(node, ast.Constant):
        return False
    return not values or any(node.value is v or (type(node.value) is type(v) and node.value == v)
                             for v in values)


def is_str(node: ast.AST | None) -> bool:
    """Whether node is a plain string literal (no formatting)."""
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def target_names(node: ast.AST) -> list[str]:
    """Names bound by an assignment target: `x`, `self.x`, `d["x"]`, tuples of those."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Subscript) and is_str(node.slice):
        return [node.slice.value]  # type: ignore[attr-defined]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for e in node.elts for n in target_names(e)]
    return []
