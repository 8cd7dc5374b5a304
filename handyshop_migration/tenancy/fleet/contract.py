"""The capture contract: which tenant migrations a shop may not take while the migration relies on its columns.

Two things read a tenant's tables by the catalog's columns, and a migration that changes those under them
breaks them — silently or at the worst moment:

- **Filled from the shared database** (provisioned, copying … cutting over): the copy and the sync of the
  shop's captured writes write every catalog column into the tenant, and verification compares them. A
  dropped, renamed or retyped column fails the next sync or verification (the cutover then refuses); a new
  `NOT NULL` column without a default fails every insert the sync makes.
- **Its way back open** (live, retired, and the steps between): the tenant logs the keys its writes change,
  and the rollback of the cutover copies those rows back into the shared database by the catalog's columns
  and verifies them. A dropped or renamed key column breaks the log; any dropped, renamed or retyped column
  loses data on the way back or fails its verification.

So for such shops a migration is refused if it drops, renames or retypes a catalog table's column, drops,
renames, moves or truncates a catalog table, (filled from the shared database only) adds a `NOT NULL` column
without a default to one, or holds a `DO` block (which cannot be checked). Adding columns, tables, indexes,
constraints and functions passes. The check is a conservative reading of the statements (comments, strings
and quoted names are tokenised properly; a statement it does not understand is not a destructive one of the
kinds above) — it is a guard against the known ways to break capture, not a SQL parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.migrations import Migration
from handyshop_migration.tenancy.lifecycle import State

FILLED_FROM_SHARED = frozenset(
    {State.PROVISIONED, State.COPYING, State.COPIED, State.VERIFIED, State.SYNCING, State.READS_ROLLOUT,
     State.CUTTING_OVER}
)
WAY_BACK_OPEN = frozenset({State.LIVE, State.ROLLING_BACK, State.RETIRING, State.RETIRED, State.RESTORING})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<line>--[^\n]*)
  | (?P<block>/\*)
  | (?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)
  | (?P<string>[EeBbXxUu]?&?'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    text: str  # keywords upper-cased, unquoted names lower-cased, quoted names as written
    quoted: bool = False

    def is_(self, *words: str) -> bool:
        return not self.quoted and self.text in words


def _tokens(script: str) -> Iterator[Token | None]:
    """Tokens of a script; None between statements. Comments, strings and dollar-quoted bodies are skipped
    (a `DO` body comes out as one token `$BODY$`)."""
    pos = 0
    while pos < len(script):
        m = _TOKEN.match(script, pos)
        if m is None:  # cannot happen: `other` matches any character
            break
        kind = m.lastgroup
        pos = m.end()
        if kind in ("space", "line", "string"):
            continue
        if kind == "block":  # nested block comments
            depth = 1
            while depth and pos < len(script):
                if script.startswith("/*", pos):
                    depth, pos = depth + 1, pos + 2
                elif script.startswith("*/", pos):
                    depth, pos = depth - 1, pos + 2
                else:
                    pos += 1
            continue
        if kind == "dollar":
            end = script.find(m.group(), pos)
            pos = len(script) if end < 0 else end + len(m.group())
            yield Token("$BODY$")
            continue
        text = m.group()
        if kind == "quoted":
            yield Token(text[1:-1].replace('""', '"'), quoted=True)
        elif kind == "word":
            yield Token(text.upper())
        elif text == ";":
            yield None
        else:
            yield Token(text)


def statements(script: str) -> list[list[Token]]:
    out: list[list[Token]] = [[]]
    for tok in _tokens(script):
        if tok is None:
            out.append([])
        else:
            out[-1].append(tok)
    return [s for s in out if s]


def _name(tok: Token) -> str:
    return tok.text if tok.quoted else tok.text.lower()


def _qualified(toks: list[Token], i: int) -> tuple[tuple[str | None, str], int]:
    """A possibly schema-qualified name at toks[i]; returns ((schema, name), index after it)."""
    first = _name(toks[i])
    if i + 2 < len(toks) and toks[i + 1].text == "." and not toks[i + 1].quoted:
        return (first, _name(toks[i + 2])), i + 3
    return (None, first), i + 1


def _split_top(toks: list[Token]) -> list[list[Token]]:
    """Split at commas outside parentheses (the actions of one ALTER TABLE)."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for tok in toks:
        if tok.text == "(" and not tok.quoted:
            depth += 1
        elif tok.text == ")" and not tok.quoted:
            depth -= 1
        if tok.text == "," and not tok.quoted and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


@dataclass(frozen=True)
class Change:
    table: tuple[str | None, str]
    what: str  # e.g. "drops column phone"
    adds_required_column: bool = False  # NOT NULL without a default (breaks inserts that do not name it)
    unchecked: bool = False  # a DO block


def _alter_actions(table: tuple[str | None, str], actions: list[Token]) -> Iterator[Change]:
    for action in _split_top(actions):
        head = action[0]
        rest = action[1:]
        if head.is_("DROP"):
            if rest and rest[0].is_("CONSTRAINT"):
                continue  # a constraint: the columns stay
            if rest and rest[0].is_("COLUMN"):
                rest = rest[1:]
            if rest[:2] and rest[0].is_("IF") and len(rest) > 2:
                rest = rest[2:]
            if rest:
                yield Change(table, f"drops column {_name(rest[0])}")
        elif head.is_("RENAME"):
            if rest and rest[0].is_("TO"):
                yield Change(table, f"renames the table to {_name(rest[1]) if len(rest) > 1 else '?'}")
            elif rest and rest[0].is_("CONSTRAINT"):
                continue
            else:
                if rest and rest[0].is_("COLUMN"):
                    rest = rest[1:]
                if rest:
                    yield Change(table, f"renames column {_name(rest[0])}")
        elif head.is_("ALTER"):
            if rest and rest[0].is_("COLUMN"):
                rest = rest[1:]
            words = {t.text for t in rest[1:] if not t.quoted}
            if rest and "TYPE" in words:
                yield Change(table, f"changes the type of column {_name(rest[0])}")
        elif head.is_("SET") and rest and rest[0].is_("SCHEMA"):
            yield Change(table, "moves the table to another schema")
        elif head.is_("ADD"):
            if rest and rest[0].is_("CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE"):
                continue
            if rest and rest[0].is_("COLUMN"):
                rest = rest[1:]
            words = [t.text for t in rest if not t.quoted]
            not_null = any(a == "NOT" and b == "NULL" for a, b in zip(words, words[1:], strict=False))
            if not_null and "DEFAULT" not in words and "GENERATED" not in words and rest:
                yield Change(table, f"adds column {_name(rest[0])} NOT NULL without a default", adds_required_column=True)


def changes(script: str) -> list[Change]:
    """The destructive changes a script makes to tables (any table; the caller keeps the catalog's)."""
    found: list[Change] = []
    for toks in statements(script):
        first = toks[0]
        if first.is_("DO"):
            found.append(Change((None, "*"), "runs a DO block, which cannot be checked", unchecked=True))
        elif first.is_("ALTER") and len(toks) > 2 and toks[1].is_("TABLE"):
            i = 2
            if toks[i].is_("IF") and i + 1 < len(toks) and toks[i + 1].is_("EXISTS"):
                i += 2
            if i < len(toks) and toks[i].is_("ONLY"):
                i += 1
            if i >= len(toks):
                continue
            table, i = _qualified(toks, i)
            if i < len(toks) and toks[i].text == "*":
                i += 1
            found.extend(_alter_actions(table, toks[i:]))
        elif first.is_("DROP", "TRUNCATE"):
            i = 1
            if first.is_("DROP"):
                if len(toks) < 2 or not toks[1].is_("TABLE"):
                    continue
                i = 2
                if i + 1 < len(toks) and toks[i].is_("IF") and toks[i + 1].is_("EXISTS"):
                    i += 2
            else:
                if i < len(toks) and toks[i].is_("TABLE"):
                    i += 1
            verb = "drops" if first.is_("DROP") else "truncates"
            while i < len(toks):
                if toks[i].is_("ONLY", "CASCADE", "RESTRICT", "RESTART", "CONTINUE", "IDENTITY") or toks[i].text in (",", "*"):
                    i += 1
                    continue
                table, i = _qualified(toks, i)
                found.append(Change(table, f"{verb} the table"))
    return found


def refusal(shop_id: int, state: State, pending: Sequence[Migration], catalog: Catalog) -> str | None:
    """Why the shop may not take `pending` now (None: it may)."""
    if state not in FILLED_FROM_SHARED and state not in WAY_BACK_OPEN:
        return None
    filled = state in FILLED_FROM_SHARED
    schemas = {t.schema for t in catalog.tables}
    ours = {(t.schema, t.name) for t in catalog.tables}
    for migration in pending:
        for change in changes(migration.sql):
            schema, name = change.table
            hit = change.unchecked or ((schema, name) in ours if schema else any((s, name) in ours for s in schemas))
            if not hit or (change.adds_required_column and not filled):
                continue
            where = "" if change.unchecked else f" on catalog table {name}"
            why = (
                f"shop {shop_id} is {state.value}: its copy and the sync of its captured writes write every catalog "
                "column into its tenant, and verification compares them"
                if filled
                else f"shop {shop_id} is {state.value}: its tenant logs the keys of its writes for the way back, which "
                "copies those rows to the shared database by the catalog's columns and verifies them"
            )
            return (
                f"migration {migration.name} {change.what}{where}, which would break that: {why}. Nothing was applied "
                "to this shop. Keep the catalog's columns while the migration relies on them (add a new column and "
                "backfill it instead of renaming or retyping; drop the old one once the shop's way back is closed)."
            )
    return None


__all__ = ["FILLED_FROM_SHARED", "WAY_BACK_OPEN", "Change", "changes", "refusal", "statements"]
