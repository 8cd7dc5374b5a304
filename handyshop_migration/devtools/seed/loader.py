"""Loading the generated rows: COPY text in one transaction, keys and indexes after the load, so a
1,000,000-repair shop needs neither much time nor memory. The output depends only on the arguments: every
random choice comes from `random.Random` seeded with the `seed` argument (one derived stream per table and
shop), and timestamps from a fixed base date."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from handyshop_migration.devtools.seed.copy_text import (
    BASE,
    DAY,
    END,
    N,
    _b,
    _e,
    _hex,
    _json,
    _opt,
    _secs,
    _signature,
    _text_array,
    _ts,
)
from handyshop_migration.devtools.seed.generators import _GENERATORS, _Group, _State
from handyshop_migration.devtools.seed.schema import (
    _COLUMNS,
    CATALOG_SHOP_ID,
    GLOBAL_SHOP_IDS,
    GLOBAL_TEMPLATE_SHOP_ID,
    MASTER_TABLES,
    MAX_SHOPS,
    ORPHAN_SHOP_ID,
    TENANT_TABLES,
    CrossShopReference,
    SeedReport,
    _create_constraints,
    _create_tables,
)
from handyshop_migration.devtools.seed.vocabulary import (
    _FIRST,
    _FOLD,
    _LAST,
    _PERMISSIONS,
    _SHOP_NAMES,
    BASE_COUNTS,
)
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError

# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

_CHUNK_ROWS = 4096  # rows per COPY write: ≈ 1 MB chunks keep memory flat and the socket busy


def _copy(conn: psycopg.Connection, table: str, lines: Iterable[str], *, freeze: bool) -> None:
    """COPY pre-formatted text lines (each ending in a newline) into `table`."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS[table])
    )
    if freeze:
        # The table was created in this transaction: frozen rows spare every later reader the hint-bit writes.
        stmt = sql.Composed([stmt, sql.SQL(" WITH (FREEZE)")])
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= _CHUNK_ROWS:
                copy.write("".join(batch))
                batch.clear()
        if batch:
            copy.write("".join(batch))


def _load_tenant_table(
    conn: psycopg.Connection, st: _State, table: str, next_id: Iterator[int], *, freeze: bool
) -> None:
    """Generate every group's rows, merge them by created_at and give them ids in that order.

    Like in the real app, the rows of different shops interleave in id order and ids grow with time.
    """
    st.new_table(table, keep_ts=table == "repairs")
    per_group = st.ids[table]
    streams = [
        _GENERATORS[table](st, g, g.counts.get(table, 0)) for g in st.groups if g.counts.get(table, 0) > 0
    ]

    def lines() -> Iterator[str]:
        for _t, gi, tail in heapq.merge(*streams):
            row_id = next(next_id)
            per_group[gi].append(row_id)
            yield f"{row_id}\t{tail}\n"

    _copy(conn, table, lines(), freeze=freeze)


def _set_sequences(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    """Move every serial sequence past its table's highest id (rows were loaded with explicit ids)."""
    for table in tables:
        qualified = sql.Identifier("public", table).as_string(conn)
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 0) + 1, false) FROM {}").format(
                sql.Identifier(table)
            ),
            (qualified,),
        )


@dataclass
class _User:
    created: int
    username: str | None
    email: str
    role: str
    shop: int | None
    first: str | None
    last: str | None
    superadmin: bool = False
    permissions: dict[str, bool] | None = None
    backup_codes: list[str] | None = None
    package: int | None = None
    group: int | None = None  # index of the shop group the user belongs to
    owner_of: int | None = None  # group index (set for owners, to fill parent_user_id)
    id: int = 0


def _password(rng: random.Random) -> str:
    # The app stores scrypt output as "<hex hash>.<hex salt>".
    return f"{_hex(rng, 128)}.{_hex(rng, 32)}"


def _user_line(rng: random.Random, u: _User, parent: int | None) -> str:
    return "\t".join((
        str(u.id), _e(u.username) if u.username else N, _password(rng), _e(u.email), _b(True),
        _b(u.superadmin), _b(False), u.role, _opt(parent),
        _json(u.permissions) if u.permissions else N, _e(u.first) if u.first else N, _e(u.last) if u.last else N,
        _opt(u.package), _opt(u.shop), _text_array(u.backup_codes) if u.backup_codes else N,
        _b(rng.random() < 0.7), _ts(u.created), N,
    )) + "\n"


def _make_shop_users(
    rng: random.Random, g: _Group, shop_name: str, created: int, *, with_owner: bool, employees: int, package: int
) -> list[_User]:
    """Owner (optional), employees and one kiosk user of one shop, in creation order."""
    slug = "".join(ch for ch in shop_name.translate(_FOLD).lower() if ch.isalnum())[:12] or "shop"
    domain = f"{slug}.at"
    users: list[_User] = []
    owner_mail = f"office@{domain}"
    if with_owner:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        codes = [_hex(rng, 8) for _ in range(10)] if rng.random() < 0.5 else None  # 2FA backup codes
        users.append(_User(created, f"{slug[:8]}{rng.randrange(10, 99)}", owner_mail, "owner", g.shop, first, last,
                           backup_codes=codes, package=package, group=g.gi, owner_of=g.gi))
    for k in range(employees):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        mail = f"{first}.{last}".translate(_FOLD).lower() + f"@{domain}"
        users.append(_User(created + (k + 1) * 7 * DAY + rng.randrange(DAY), None, mail, "employee", g.shop, first,
                           last, permissions=rng.choice(_PERMISSIONS), group=g.gi))
    # Kiosk users have no username and share the shop's address: emails are not unique in the app.
    users.append(_User(created + 2 * DAY, None, owner_mail, "kiosk", g.shop, "Kiosk", None, group=g.gi))
    return users


def _assign_users(users: list[_User], groups: list[_Group], first_id: Iterator[int]) -> None:
    """Give ids in creation order and tell each shop group which users its rows may reference."""
    users.sort(key=lambda u: u.created)
    for u in users:
        u.id = next(first_id)
    for u in users:
        if u.group is None:
            continue
        g = groups[u.group]
        if u.role == "owner":
            g.owner_id = u.id
        if u.role in ("owner", "employee"):
            g.user_ids.append(u.id)
            g.user_emails.append(u.email)
            g.names.append(u.username if u.role == "owner" and u.username else u.first or "Mitarbeiter")
        if u.role == "employee":
            g.employees.append((u.id, u.first or "", u.last or "", u.email))
        if u.role == "kiosk":
            g.kiosk_user_id = u.id


def _users_lines(rng: random.Random, users: list[_User], groups: list[_Group]) -> Iterator[str]:
    for u in users:
        parent = groups[u.group].owner_id if u.group is not None and u.role != "owner" else None
        yield _user_line(rng, u, parent)


def _counts(scale: float, factor: float) -> dict[str, int]:
    return {t: max(1, round(c * scale * factor)) for t, c in BASE_COUNTS.items()}


def _analyze(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables)))


def _signature_pool(seed_key: str) -> list[str]:
    rng = random.Random(f"{seed_key}/signatures-pool")
    return [_signature(rng) for _ in range(16)]


def seed_database(
    spec: ConnectionSpec,
    *,
    shops: int = 5,
    scale: float = 1.0,
    seed: int = 42,
    big_shop_rows: int | None = None,
    cross_shop_reference: bool = False,
    orphan_rows: bool = False,
) -> SeedReport:
    """Create the shared schema in `spec`'s (empty) database and fill it; return what was planted.

    Refuses a database that already has a `shops` table: it never drops or overwrites data.
    """
    if not 1 <= shops <= MAX_SHOPS:
        raise ConfigurationError(f"shops must be between 1 and {MAX_SHOPS}, got {shops}.")
    if not scale > 0:
        raise ConfigurationError(f"scale must be greater than 0, got {scale}.")
    if big_shop_rows is not None and big_shop_rows < 0:
        raise ConfigurationError(f"big_shop_rows must be 0 or more, got {big_shop_rows}.")
    if cross_shop_reference and shops < 2:
        raise ConfigurationError("cross_shop_reference needs at least 2 shops (a repair of one, a customer of another).")

    refusal = (
        f"database {spec.dbname!r} already contains a 'shops' table; seed_database never drops or overwrites "
        "data. Seed into a new database (e.g. ensure_database(admin, 'handyshop_shared_2')), or drop this one "
        "yourself if it is disposable."
    )
    rng = random.Random(seed)
    with spec.connect() as conn:
        if conn.execute("SELECT to_regclass('public.shops')").fetchone() != (None,):
            raise ConfigurationError(refusal)
        try:
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds after the load
            _create_tables(conn)
        except psycopg.errors.DuplicateTable as exc:
            # A concurrent seed got there first, or the database holds other tables of the same names.
            raise ConfigurationError(
                f"database {spec.dbname!r} already contains a table of the shared schema "
                f"({exc.diag.message_primary}); seed_database never drops or overwrites data. "
                "Seed into a new database."
            ) from None
        report = _seed(conn, rng, f"{seed}", shops, scale, big_shop_rows, cross_shop_reference, orphan_rows)
        _create_constraints(conn)
        _set_sequences(conn, MASTER_TABLES + TENANT_TABLES)
        conn.commit()
        _analyze(conn, MASTER_TABLES + TENANT_TABLES)
        conn.commit()
    return report


def _seed(
    conn: psycopg.Connection,
    rng: random.Random,
    seed_key: str,
    n_shops: int,
    scale: float,
    big_shop_rows: int | None,
    cross_shop_reference: bool,
    orphan_rows: bool,
) -> SeedReport:
    packages = [
        (1, "Basic", "Grundfunktionen für Einzelkämpfer", 0.0),
        (2, "Professional", "Mitarbeiter, Kostenvoranschläge, E-Mail-Versand", 19.9),
        (3, "Enterprise", "Mehrere Filialen, Kiosk-Modus, Support-Zugang", 29.9),
    ]
    pkg_created = _secs(datetime(2022, 11, 1))
    _copy(conn, "packages",
          (f"{i}\t{_e(name)}\t{_e(desc)}\t{price!r}\t{_ts(pkg_created)}\n" for i, name, desc, price in packages),
          freeze=True)

    # Shops sign up over two years and a bit; shop 1 is the oldest (and the big one, if asked).
    first_signup, last_signup = _secs(datetime(2023, 1, 10)), _secs(datetime(2025, 3, 1))
    slot = (last_signup - first_signup) // n_shops
    shop_ids = list(range(1, n_shops + 1))
    shop_created = [first_signup + i * slot + rng.randrange(max(slot // 2, 1)) for i in range(n_shops)]
    names = [
        _SHOP_NAMES[i] if i < len(_SHOP_NAMES) else f"{_SHOP_NAMES[i % len(_SHOP_NAMES)]} {i // len(_SHOP_NAMES) + 1}"
        for i in range(n_shops)
    ]
    without_owner = [shop_ids[2]] if n_shops >= 3 else []

    groups: list[_Group] = []
    for i, sid in enumerate(shop_ids):
        counts = _counts(scale, rng.uniform(0.7, 1.4))
        groups.append(_Group(len(groups), sid, f"{seed_key}/shop/{sid}", shop_created[i], END, counts))
    if big_shop_rows is not None:
        big = groups[0].counts
        big["repairs"] = big_shop_rows
        big["customers"] = max(big["customers"], big_shop_rows // 4)

    def special(shop: int | None, start: datetime, end: datetime, counts: dict[str, int]) -> _Group:
        g = _Group(len(groups), shop, f"{seed_key}/special/{shop}", _secs(start), _secs(end), counts)
        groups.append(g)
        return g

    # Global rows (§5.1): the device catalog under 1682, system templates under 0, legacy rows under NULL.
    catalog = special(CATALOG_SHOP_ID, datetime(2022, 12, 1), datetime(2023, 1, 5),
                      {"device_types": 5, "user_brands": 12, "user_models": 40})
    templates = special(GLOBAL_TEMPLATE_SHOP_ID, datetime(2022, 12, 1), datetime(2023, 2, 1), {"email_templates": 5})
    null_group = special(None, datetime(2023, 1, 1), datetime(2024, 6, 1),
                         {"customers": 2, "repairs": 1, "repair_status_history": 2, "email_templates": 1})
    orphan = (
        special(ORPHAN_SHOP_ID, datetime(2023, 5, 1), datetime(2024, 2, 1),
                {"customers": 3, "repairs": 2, "repair_status_history": 3})
        if orphan_rows else None
    )
    if cross_shop_reference:
        groups[1].cross_customer_group = groups[0].gi

    # Users: a superadmin (shop NULL), per shop an owner (one shop lacks it), employees and a kiosk user,
    # and one employee left without a shop.
    user_rng = random.Random(f"{seed_key}/users")
    users: list[_User] = [
        _User(_secs(datetime(2022, 11, 15)), "superadmin", "support@handyshop-verwaltung.at", "owner", None,
              "Super", "Admin", superadmin=True)
    ]
    for i, g in enumerate(groups[:n_shops]):
        users += _make_shop_users(
            user_rng, g, names[i], g.start, with_owner=g.shop not in without_owner,
            employees=2 + int(user_rng.random() < 0.5), package=1 + i % 3,
        )
    if n_shops >= 2:
        users.append(_User(_secs(datetime(2024, 2, 20)), None, "ex.mitarbeiter@gmx.at", "employee", None,
                           "Kerstin", "Fröhlich", permissions=_PERMISSIONS[1]))
    _assign_users(users, groups, itertools.count(1))
    superadmin = users[[u.superadmin for u in users].index(True)].id
    for g in groups:
        g.superadmin_id = superadmin
        if g.gi < n_shops:
            g.counts["employees"] = len(g.employees)
            g.counts["kiosk_online_status"] = g.counts["kiosk_devices"]
    catalog.user_ids = [superadmin]  # the real catalog rows belong to the superadmin (user 10 there)

    _copy(conn, "shops",
          (f"{sid}\t{_e(names[i])}\t{_ts(shop_created[i])}\t{_ts(shop_created[i] + 30 * DAY)}\n"
           for i, sid in enumerate(shop_ids)), freeze=True)
    _copy(conn, "users", _users_lines(user_rng, users, groups), freeze=True)

    st = _State(groups, _signature_pool(seed_key))
    for table in TENANT_TABLES:
        _load_tenant_table(conn, st, table, itertools.count(1), freeze=True)

    def ids_of(g: _Group) -> dict[str, list[int]]:
        return {t: list(st.ids[t][g.gi]) for t in TENANT_TABLES if len(st.ids[t][g.gi])}

    crosses: list[CrossShopReference] = []
    if cross_shop_reference:
        a, b = groups[1], groups[0]
        crosses.append(CrossShopReference(
            "repairs", st.ids["repairs"][a.gi][0], "customer_id", "customers", st.ids["customers"][b.gi][0],
            a.shop, b.shop,  # type: ignore[arg-type]
        ))
    table_rows = {t: len(packages) if t == "packages" else n_shops if t == "shops" else len(users)
                  for t in MASTER_TABLES}
    table_rows.update({t: sum(len(a) for a in st.ids[t]) for t in TENANT_TABLES})
    return SeedReport(
        shop_ids=shop_ids,
        table_rows=table_rows,
        shop_rows={g.shop: {t: len(st.ids[t][g.gi]) for t in TENANT_TABLES} for g in groups if g.shop is not None},
        null_shop_rows=ids_of(null_group),
        global_rows={catalog.shop: ids_of(catalog), templates.shop: ids_of(templates)},  # type: ignore[dict-item]
        orphan_shop_rows={orphan.shop: ids_of(orphan)} if orphan is not None else {},  # type: ignore[dict-item]
        cross_shop_references=crosses,
        shops_without_owner=without_owner,
        users_without_shop=[u.id for u in users if u.shop is None and not u.superadmin],
        superadmin_ids=[u.id for u in users if u.superadmin],
    )


def ensure_database(admin: ConnectionSpec, dbname: str) -> ConnectionSpec:
    """Create database `dbname` on `admin`'s server unless it exists; return a spec for it."""
    with admin.connect(autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently: just as good
    return admin.with_db(dbname)


def add_shop(spec: ConnectionSpec, *, name: str, seed: int = 0, scale: float = 1.0) -> int:
    """A shop signing up after the seed: shops row, owner, employee and kiosk user, and a few rows in
    every tenant table (ids from the live sequences, as the app would get them). Returns the shop id."""
    if not scale > 0:
        raise ConfigurationError(f"scale must be greater than 0, got {scale}.")
    with spec.connect() as conn:
        if conn.execute("SELECT to_regclass('public.shops')").fetchone() == (None,):
            raise ConfigurationError(
                f"database {spec.dbname!r} has no 'shops' table; run seed_database on it before add_shop."
            )
        shop_id = _reserve_ids(conn, "shops", 1)[0]
        while shop_id in (*GLOBAL_SHOP_IDS, ORPHAN_SHOP_ID):
            # Those numbers already mean "global" or "orphan" in the data; a real shop must not get them.
            shop_id = _reserve_ids(conn, "shops", 1)[0]
        latest = conn.execute("SELECT max(created_at) FROM shops").fetchone()
        base = max(latest[0] if latest and latest[0] else BASE, BASE)
        start = _secs(base) + DAY
        end = start + 30 * DAY
        package = conn.execute("SELECT min(id) FROM packages").fetchone()
        superadmin = conn.execute("SELECT min(id) FROM users WHERE is_superadmin").fetchone()
        rng = random.Random(f"{seed}/add/{shop_id}")
        counts = {t: max(1, round(c * scale * 0.02)) for t, c in BASE_COUNTS.items()}
        g = _Group(0, shop_id, f"{seed}/add/{shop_id}", start, end, counts)
        g.superadmin_id = superadmin[0] if superadmin else None
        users = _make_shop_users(rng, g, name, start, with_owner=True, employees=1,
                                 package=package[0] if package else None)  # type: ignore[arg-type]
        _assign_users(users, [g], iter(_reserve_ids(conn, "users", len(users))))
        counts["employees"] = len(g.employees)
        counts["kiosk_online_status"] = counts["kiosk_devices"]

        _copy(conn, "shops", [f"{shop_id}\t{_e(name)}\t{_ts(start)}\t{_ts(start)}\n"], freeze=False)
        _copy(conn, "users", _users_lines(rng, users, [g]), freeze=False)
        st = _State([g], _signature_pool(f"{seed}/add/{shop_id}"))
        for table in TENANT_TABLES:
            ids = _reserve_ids(conn, table, counts[table])
            _load_tenant_table(conn, st, table, iter(ids), freeze=False)
        conn.commit()
    return shop_id


def _reserve_ids(conn: psycopg.Connection, table: str, n: int) -> list[int]:
    """Take n ids from the table's sequence, so rows loaded by COPY with explicit ids never collide."""
    qualified = sql.Identifier("public", table).as_string(conn)
    cur = conn.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (qualified, n)
    )
    return [int(r[0]) for r in cur.fetchall()]
