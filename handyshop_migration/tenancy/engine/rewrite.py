"""Rewriting SQL texts without the tenant column, on PostgreSQL's own parse tree.

Tenant databases have no tenant column, so an object whose text names it must lose it or stay behind. The
texts come from the server (`pg_get_viewdef`, `pg_get_indexdef`, `pg_get_expr`); they are parsed with
pglast (libpg_query: the parser of the PostgreSQL server itself, compiled as a library), changed on the
tree and printed again, so that nothing depends on how a text happens to be spaced or parenthesised.
Regular expressions on SQL would be wrong on the first quoted identifier or nested condition.

Inside one tenant's database every row has the same tenant value, so these rewrites keep the meaning:
- a conjunct `t.tenant = K` (in WHERE, HAVING or a JOIN's ON) pins the object to tenant K: it is dropped,
  and the object exists in K's database only (in the others it would have no rows, or index none);
- a conjunct `a.tenant = b.tenant` or `t.tenant IS NOT NULL` is always true there: dropped;
- the tenant column as an output column, a GROUP BY, ORDER BY or DISTINCT item, or an index key: dropped
  (one tenant's rows all share it);
- anything else that still names it (an expression, an OR, a function argument) cannot be rewritten
  without changing the meaning: the caller reports the object.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream


@dataclass(frozen=True)
class Rewrite:
    sql: str | None  # the rewritten text (None: nothing remains, e.g. a predicate that was only the pin)
    tenant: int | None  # the tenant a `tenant = K` conjunct pins the object to
    changed: bool
    problem: str | None  # why it cannot be rewritten (then `sql` is meaningless)


def _walk(node: object) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
        for slot in type(node).__slots__:
            yield from _walk(getattr(node, slot, None))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def _is_column(node: object, column: str) -> bool:
    if not isinstance(node, ast.ColumnRef) or not node.fields:
        return False
    last = node.fields[-1]
    return isinstance(last, ast.String) and last.sval == column


def _integer(node: object) -> int | None:
    if isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return int(node.val.ival)
    return None


def _names(node: object, column: str) -> bool:
    return any(_is_column(n, column) for n in _walk(node))


class _Rewriter:
    def __init__(self, column: str) -> None:
        self.column = column
        self.tenants: set[int] = set()
        self.changed = False

    def conjuncts(self, expr: ast.Node | None) -> ast.Node | None:
        """`expr` without the conjuncts that pin or are implied by the tenant column."""
        if expr is None:
            return None
        parts = list(expr.args) if isinstance(expr, ast.BoolExpr) and expr.boolop == enums.BoolExprType.AND_EXPR else [expr]
        kept = []
        for part in parts:
            if isinstance(part, ast.A_Expr) and part.kind == enums.A_Expr_Kind.AEXPR_OP and _op(part) == "=":
                left, right = part.lexpr, part.rexpr
                if _is_column(left, self.column) and _is_column(right, self.column):
                    self.changed = True
                    continue
                for col, const in ((left, right), (right, left)):
                    if _is_column(col, self.column) and _integer(const) is not None:
                        self.tenants.add(_integer(const))  # type: ignore[arg-type]
                        self.changed = True
                        break
                else:
                    kept.append(part)
                continue
            if (
                isinstance(part, ast.NullTest)
                and part.nulltesttype == enums.NullTestType.IS_NOT_NULL
                and _is_column(part.arg, self.column)
            ):
                self.changed = True
                continue
            kept.append(part)
        if not kept:
            return None
        if len(kept) == 1:
            return kept[0]
        return ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(kept))

    def items(self, items: tuple | None, unwrap: str | None = None) -> tuple | None:
        """A list (target list, GROUP BY, ORDER BY, DISTINCT) without the bare tenant column."""
        if not items:
            return items
        kept = []
        for item in items:
            value = getattr(item, unwrap) if unwrap and item is not None else item
            if _is_column(value, self.column):
                self.changed = True
                continue
            kept.append(item)
        return tuple(kept)

    def select(self, s: ast.SelectStmt) -> None:
        s.targetList = self.items(s.targetList, "val")
        s.groupClause = self.items(s.groupClause)
        s.sortClause = self.items(s.sortClause, "node")
        if s.distinctClause and s.distinctClause != (None,):
            s.distinctClause = self.items(s.distinctClause) or (None,)
        s.whereClause = self.conjuncts(s.whereClause)
        s.havingClause = self.conjuncts(s.havingClause)

    def tree(self, root: ast.Node) -> None:
        nodes = list(_walk(root))
        for node in nodes:
            if isinstance(node, ast.SelectStmt):
                self.select(node)
            elif isinstance(node, ast.JoinExpr) and node.quals is not None:
                node.quals = self.conjuncts(node.quals) or ast.A_Const(val=ast.Boolean(boolval=True))

    def outcome(self, text: str | None, root: ast.Node | None) -> Rewrite:
        if root is not None and _names(root, self.column):
            return Rewrite(None, None, self.changed, f"names {self.column} in an expression that cannot drop it")
        if len(self.tenants) > 1:
            return Rewrite(None, None, True, f"names several tenants ({', '.join(map(str, sorted(self.tenants)))})")
        return Rewrite(text, next(iter(self.tenants), None), self.changed, None)


def _op(expr: ast.A_Expr) -> str:
    names = expr.name or ()
    return names[-1].sval if names and isinstance(names[-1], ast.String) else ""


def _parse_one(text: str) -> ast.Node:
    [raw] = parse_sql(text)
    return raw.stmt


def predicate(text: str | None, column: str) -> Rewrite:
    """An index predicate (or any WHERE condition) without the tenant column."""
    if not text:
        return Rewrite(text, None, False, None)
    try:
        stmt = _parse_one(f"SELECT 1 WHERE {text}")
    except ParseError as exc:
        return Rewrite(None, None, False, f"cannot be parsed ({exc})")
    r = _Rewriter(column)
    rest = r.conjuncts(stmt.whereClause)
    out = r.outcome(RawStream()(rest) if rest is not None else None, rest)
    return out


def view(select_text: str, column: str) -> Rewrite:
    """A view's query (the text of `pg_get_viewdef`) without the tenant column."""
    text = select_text.strip().rstrip(";")
    try:
        stmt = _parse_one(text)
    except ParseError as exc:
        return Rewrite(None, None, False, f"cannot be parsed ({exc})")
    r = _Rewriter(column)
    r.tree(stmt)
    return r.outcome(RawStream()(stmt) if r.changed else text, stmt)


def index(definition: str, column: str) -> Rewrite:
    """A CREATE INDEX statement without the tenant column among its keys and in its predicate."""
    try:
        stmt = _parse_one(definition)
    except ParseError as exc:
        return Rewrite(None, None, False, f"cannot be parsed ({exc})")
    r = _Rewriter(column)
    params = tuple(p for p in stmt.indexParams if p.name != column)
    if len(params) != len(stmt.indexParams):
        r.changed = True
    if not params:
        return Rewrite(None, None, True, f"its only key is {column}")
    stmt.indexParams = params
    stmt.indexIncludingParams = tuple(p for p in (stmt.indexIncludingParams or ()) if p.name != column) or None
    stmt.whereClause = r.conjuncts(stmt.whereClause)
    return r.outcome(RawStream()(stmt) if r.changed else definition, stmt)
