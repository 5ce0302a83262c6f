"""The `wolfram_alpha` built-in tool's offline stand-in (paper 4.3.5): SymPy, run inside the sandbox.

SymPy's `parse_expr`/`sympify` evaluate Python, so the query never runs in herd's process: a fixed
program (below) runs in `herd.sandbox` and reads the query from a file in its working directory (the
query is data, never pasted into code). It understands "integrate EXPR [dx] [from A to B]",
"derivative of EXPR", "solve EQ[, EQ] [for x]", "factor / expand / simplify EXPR", "limit EXPR as x
-> A", and otherwise evaluates the expression; `^` is a power and implicit products (`5x`, `x^2 sin x`)
are read as a person writes them. The answer comes in sections, as the Wolfram Alpha API's: input
interpretation, result, decimal approximation. A computation past the time limit is a timeout result.
"""

from __future__ import annotations

from dataclasses import dataclass

from herd.tools.sandboxed import SandboxedTool

PROGRAM = r'''
import re
import sympy as sp
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        standard_transformations)

query = open("query.txt", encoding="utf-8").read().strip().rstrip("?.")
T = standard_transformations + (implicit_multiplication_application, convert_xor)
NAMES = {"e": sp.E, "E": sp.E, "pi": sp.pi, "Pi": sp.pi, "inf": sp.oo, "infinity": sp.oo, "oo": sp.oo}


def P(text):
    return parse_expr(text.strip(), transformations=T, local_dict=dict(NAMES))


def variable(expr, name=None):
    if name:
        return sp.Symbol(name.strip())
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    return free[0] if free else sp.Symbol("x")


def show(interpretation, result):
    print("Input interpretation:")
    print(interpretation)
    print("Result:")
    print(result)
    try:
        values = result if isinstance(result, (list, tuple)) else [result]
        if isinstance(result, str) or all(getattr(v, "is_Integer", False) for v in values):
            return  # exact integers (and factorizations) need no decimal form
        decimals = [sp.N(v, 15) for v in values]
        if all(getattr(d, "is_number", False) for d in decimals) and [str(d) for d in decimals] != [str(v) for v in values]:
            print("Decimal approximation:")
            print(", ".join(str(d) for d in decimals))
    except Exception:
        pass


def equation(text):
    if "=" in text:
        left, right = text.split("=", 1)
        return sp.Eq(P(left), P(right))
    return sp.Eq(P(text), 0)


flags = re.IGNORECASE
m = re.match(r"^(?:integrate|integral of|integral)\s+(.+?)(?:\s+d([a-z]))?(?:\s+from\s+(.+?)\s+to\s+(.+))?$", query, flags)
if m:
    expr = P(m.group(1))
    x = variable(expr, m.group(2))
    if m.group(3) is not None:
        a, b = P(m.group(3)), P(m.group(4))
        show(f"integral_{a}^{b} {expr} d{x}", sp.simplify(sp.integrate(expr, (x, a, b))))
    else:
        show(f"integral {expr} d{x}", sp.integrate(expr, x))
    raise SystemExit
m = re.match(r"^(?:derivative of|differentiate|d/d([a-z]))\s+(.+?)(?:\s+with respect to\s+([a-z]))?$", query, flags)
if m:
    expr = P(m.group(2))
    x = variable(expr, m.group(1) or m.group(3))
    show(f"d/d{x} ({expr})", sp.diff(expr, x))
    raise SystemExit
m = re.match(r"^solve\s+(.+?)(?:\s+for\s+([a-z](?:\s*,\s*[a-z])*))?$", query, flags)
if m:
    equations = [equation(part) for part in re.split(r",\s*|\s+and\s+", m.group(1)) if part.strip()]
    symbols = ([sp.Symbol(s.strip()) for s in m.group(2).split(",")] if m.group(2)
               else sorted(set().union(*(e.free_symbols for e in equations)), key=lambda s: s.name))
    solutions = sp.solve(equations if len(equations) > 1 else equations[0], symbols if len(symbols) > 1 else symbols[0],
                         dict=len(symbols) > 1)
    show(", ".join(str(e) for e in equations) + f" for {', '.join(map(str, symbols))}", solutions)
    raise SystemExit
m = re.match(r"^limit(?: of)?\s+(.+?)\s+as\s+([a-z])\s*(?:->|to|approaches)\s*(.+)$", query, flags)
if m:
    expr, x, a = P(m.group(1)), sp.Symbol(m.group(2)), P(m.group(3))
    show(f"lim_({x}->{a}) {expr}", sp.limit(expr, x, a))
    raise SystemExit
m = re.match(r"^(factor|expand|simplify)\s+(.+)$", query, flags)
if m:
    verb, expr = m.group(1).lower(), P(m.group(2))
    if verb == "factor" and expr.is_Integer:
        show(f"prime factorization of {expr}", " * ".join(f"{p}^{k}" if k > 1 else f"{p}"
                                                         for p, k in sp.factorint(expr).items()))
    else:
        show(f"{verb} {expr}", getattr(sp, verb)(expr))
    raise SystemExit
expr = P(query)
show(str(expr), sp.simplify(expr) if not expr.is_Number else expr)
'''


@dataclass
class MathEngine(SandboxedTool):
    """Answers math queries with SymPy in the sandbox (one fresh sandbox run per query)."""

    def __call__(self, query: str) -> str:
        if not query.strip():
            return "Error: empty query"
        result = self.sandbox.run_python(PROGRAM, files={"query.txt": query})
        if result.status == "timeout":
            return f"Error: the computation did not finish within {self.timeout_s:g} s"
        if result.status != "ok":
            last = [line for line in result.stderr.strip().splitlines() if line.strip()]
            return "Error: could not evaluate the query" + (f" ({last[-1][:300]})" if last else "")
        return result.stdout.strip()
