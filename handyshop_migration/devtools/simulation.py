"""A simulated Handyshop application that keeps writing while its shops are migrated.

It writes the way the real app would after adopting the tool: every write asks
`RouteResolver.resolve(shop, "write")` where to go (the shared database, with `shop_id`, or the shop's own
database, without), and a write that meets a fence (SQLSTATE HS001, during the seconds of a cutover or
its rollback) is retried after asking again. It inserts, updates and deletes rows — rows it created and
rows copied in bulk — increments counters (so a change applied twice would show), and moves customers
between shops. A journal holds the final state each written row must have; `verify` looks for it where
each shop's data lives at the end.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.application.routing import Route, RouteResolver
from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.capture import FENCE_SQLSTATE


@dataclass
class Expectation:
    shop: int
    table: str
    key: int
    present: bool
    column: str | None = None
    value: str | None = None


@dataclass
class ShopWrites:
    made: int = 0
    rows: int = 0
    found: int = 0
    missing: list[str] = field(default_factory=list)
    tenant: bool = False  # checked in the shop's tenant database (else in the shared one)


class SimulatedApp:
    def __init__(self, shared: ConnectionSpec, resolver: RouteResolver, shops: Sequence[int], *, seed: int = 1) -> None:
        self.shared = shared
        self.resolver = resolver
        self.shops = list(shops)
        self.rng = random.Random(seed)
        self.ops: Counter[str] = Counter()
        self.writes: Counter[int] = Counter()
        self.fence_retries = 0
        self.errors: list[str] = []
        self.journal: dict[tuple[str, int], Expectation] = {}
        self.moved_away: list[Expectation] = []  # rows that left a shop: absent there
        self._conns: dict[str, psycopg.Connection] = {}
        self._lock = threading.Lock()
        self._load_known_rows()

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _load_known_rows(self) -> None:
        """Rows copied in bulk that the app may touch: customers (to update, to hang repairs on) and
        newsletter subscribers (rows without children: deletable)."""
        self.customers: dict[int, list[int]] = {s: [] for s in self.shops}
        self.subscribers: dict[int, list[int]] = {s: [] for s in self.shops}
        self.mine: dict[int, list[int]] = {s: [] for s in self.shops}  # customers this app created (no children)
        self.counters: dict[int, int] = {}
        with self.shared.connect() as conn:
            for shop, cid in conn.execute(
                "SELECT shop_id, id FROM customers WHERE shop_id = ANY(%s) ORDER BY id", (self.shops,)
            ).fetchall():
                self.customers[shop].append(cid)
            for shop, sid in conn.execute(
                "SELECT shop_id, id FROM newsletter_subscribers WHERE shop_id = ANY(%s) ORDER BY id", (self.shops,)
            ).fetchall():
                self.subscribers[shop].append(sid)

    def _expect(self, e: Expectation) -> None:
        self.journal[(e.table, e.key)] = e

    # -- connections ------------------------------------------------------------------------------------

    def _conn(self, route: Route) -> psycopg.Connection:
        # By address, not by shop: a shop whose tenant database moved to another server is reached there.
        name = "shared" if route.target == "shared" else f"tenant-{route.shop_id}-{route.spec.describe()}"
        conn = self._conns.get(name)
        if conn is None or conn.closed or conn.broken:
            conn = self._conns[name] = route.spec.connect(autocommit=True)
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def _write(self, shop: int, statement: Callable[[psycopg.Connection, bool], object], *, tries: int = 600) -> object:
        """Run one write where the shop's writes go now; on the fence, ask again and retry."""
        for _ in range(tries):
            route = self.resolver.resolve(shop, "write")
            try:
                return statement(self._conn(route), route.target == "shared")
            except psycopg.Error as exc:
                if exc.sqlstate == FENCE_SQLSTATE:
                    self.fence_retries += 1
                    self.resolver.invalidate(shop)
                    time.sleep(0.05)
                    continue
                raise
        raise TimeoutError(f"shop {shop}: writes stayed fenced for {tries * 0.05:.0f}s")

    # -- operations -------------------------------------------------------------------------------------

    def _insert_customer(self, shop: int) -> None:
        marker = f"sim-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"

        def run(conn: psycopg.Connection, shared: bool) -> object:
            cols = ["first_name", "last_name", "phone", "zip_code"] + (["shop_id"] if shared else [])
            values: list[object] = ["Simulierte", "Kundin 🙂", marker, "0"] + ([shop] if shared else [])
            query = sql.SQL("INSERT INTO customers ({}) VALUES ({}) RETURNING id").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(sql.Placeholder() * len(cols))
            )
            row = one_row(conn, query, values)
            return row[0]

        cid = int(self._write(shop, run))  # type: ignore[call-overload]
        self.mine[shop].append(cid)
        self.counters[cid] = 0
        self._expect(Expectation(shop, "customers", cid, True, "phone", marker))

    def _update_customer(self, shop: int) -> None:
        if not self.customers[shop]:
            return
        cid = self.rng.choice(self.customers[shop])
        marker = f"upd-{self.rng.getrandbits(40):x}"
        self._write(shop, lambda c, _s: c.execute("UPDATE customers SET phone = %s WHERE id = %s", (marker, cid)))
        self._expect(Expectation(shop, "customers", cid, True, "phone", marker))

    def _count(self, shop: int) -> None:
        """Not idempotent on purpose: applied twice, the counter would be off."""
        if not self.mine[shop]:
            return self._insert_customer(shop)
        cid = self.rng.choice(self.mine[shop])
        self._write(
            shop, lambda c, _s: c.execute("UPDATE customers SET zip_code = (zip_code::int + 1)::text WHERE id = %s", (cid,))
        )
        self.counters[cid] += 1
        self._expect(Expectation(shop, "customers", cid, True, "zip_code", str(self.counters[cid])))

    def _insert_repair(self, shop: int) -> None:
        if not self.customers[shop]:
            return
        cid = self.rng.choice(self.customers[shop])
        marker = f"Akku tauschen #{self.rng.getrandbits(32):x}"

        def run(conn: psycopg.Connection, shared: bool) -> object:
            cols = ["customer_id", "device_type", "brand", "model", "issue"] + (["shop_id"] if shared else [])
            values: list[object] = [cid, "Smartphone", "Samsung", "Galaxy S21", marker] + ([shop] if shared else [])
            query = sql.SQL("INSERT INTO repairs ({}) VALUES ({}) RETURNING id").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(sql.Placeholder() * len(cols))
            )
            row = one_row(conn, query, values)
            return row[0]

        rid = int(self._write(shop, run))  # type: ignore[call-overload]
        self._expect(Expectation(shop, "repairs", rid, True, "issue", marker))

    def _delete_bulk_row(self, shop: int) -> None:
        if not self.subscribers[shop]:
            return
        sid = self.subscribers[shop].pop(self.rng.randrange(len(self.subscribers[shop])))
        self._write(shop, lambda c, _s: c.execute("DELETE FROM newsletter_subscribers WHERE id = %s", (sid,)))
        self._expect(Expectation(shop, "newsletter_subscribers", sid, False))

    def _delete_own_row(self, shop: int) -> None:
        if not self.mine[shop]:
            return
        cid = self.mine[shop].pop(self.rng.randrange(len(self.mine[shop])))
        self._write(shop, lambda c, _s: c.execute("DELETE FROM customers WHERE id = %s", (cid,)))
        self._expect(Expectation(shop, "customers", cid, False))

    def _move(self, shop: int) -> bool:
        """A customer moves to another shop: only while both shops still write to the shared database."""
        others = [s for s in self.shops if s != shop]
        if not self.mine[shop] or not others:
            return False
        dest = self.rng.choice(others)
        if any(self.resolver.resolve(s, "write").target != "shared" for s in (shop, dest)):
            return False
        cid = self.mine[shop][-1]
        with self.shared.connect(autocommit=True) as conn:
            try:
                moved = conn.execute("UPDATE customers SET shop_id = %s WHERE id = %s", (dest, cid)).rowcount
            except psycopg.Error as exc:
                if exc.sqlstate == FENCE_SQLSTATE:
                    return False  # one of the two started its cutover meanwhile
                raise
        if not moved:
            return False
        self.mine[shop].remove(cid)
        self.mine[dest].append(cid)
        previous = self.journal.get(("customers", cid))
        self.moved_away.append(Expectation(shop, "customers", cid, False))
        self._expect(Expectation(dest, "customers", cid, True, previous.column if previous else None,
                                 previous.value if previous else None))
        self.writes[dest] += 1
        return True

    def step(self) -> None:
        shop = self.rng.choice(self.shops)
        operations: dict[str, tuple[int, Callable[[int], object]]] = {
            "insert_customer": (20, self._insert_customer),
            "update_customer": (20, self._update_customer),
            "count": (20, self._count),
            "insert_repair": (15, self._insert_repair),
            "delete_bulk_row": (8, self._delete_bulk_row),
            "delete_own_row": (7, self._delete_own_row),
            "move": (10, self._move),
        }
        kind = self.rng.choices(list(operations), weights=[w for w, _ in operations.values()])[0]
        if operations[kind][1](shop) is False:
            return  # a move that could not happen now
        self.ops[kind] += 1
        self.writes[shop] += 1

    def run(self, stop: threading.Event, *, pause: float = 0.0, limit: int | None = None) -> None:
        """Write until `stop` is set (or `limit` writes); errors other than the fence are kept, not raised."""
        done = 0
        while not stop.is_set() and (limit is None or done < limit):
            try:
                self.step()
            except Exception as exc:  # the journal says what got lost; the error says why
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if len(self.errors) > 20:
                    break
            done += 1
            if pause:
                time.sleep(pause)

    def start(self, *, pause: float = 0.0) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), kwargs={"pause": pause}, name="simulated-app", daemon=True)
        thread.start()
        return thread, stop

    # -- checking ---------------------------------------------------------------------------------------

    def verify(self, home: Callable[[int], tuple[ConnectionSpec, bool]]) -> dict[int, ShopWrites]:
        """`home(shop)` gives where the shop's data lives now and whether that is the shared database."""
        result = {s: ShopWrites(made=self.writes[s]) for s in self.shops}
        expectations = list(self.journal.values()) + [
            m for m in self.moved_away if self.journal.get((m.table, m.key), m).shop != m.shop
        ]
        by_shop: dict[int, list[Expectation]] = {}
        for e in expectations:
            by_shop.setdefault(e.shop, []).append(e)
        for shop, items in by_shop.items():
            spec, shared = home(shop)
            with spec.connect() as conn:
                for e in items:
                    where = sql.SQL("id = %s AND shop_id = %s") if shared else sql.SQL("id = %s")
                    params = (e.key, shop) if shared else (e.key,)
                    column = sql.Identifier(e.column) if e.column else sql.SQL("NULL")
                    row = conn.execute(
                        sql.SQL("SELECT {}::text FROM {} WHERE {}").format(column, sql.Identifier(e.table), where), params
                    ).fetchone()
                    ok = (row is not None) == e.present and (not e.present or e.value is None or row[0] == e.value)  # type: ignore[index]
                    result[shop].rows += 1
                    if ok:
                        result[shop].found += 1
                    else:
                        result[shop].missing.append(f"{e.table} {e.key}: expected {'value ' + str(e.value) if e.present else 'absent'}, found {row}")
        return result
