"""Row generators: one lazy generator per tenant table, each formatting COPY text lines from a seeded RNG."""

from __future__ import annotations

import json
import random
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from handyshop_migration.devtools.seed.copy_text import (
    _DAYS,
    DAY,
    HOUR,
    N,
    _b,
    _e,
    _euro,
    _hex,
    _json,
    _letters,
    _opt,
    _text_array,
    _ts,
    _uuid,
)
from handyshop_migration.devtools.seed.schema import (
    _COLUMNS,
    GLOBAL_TEMPLATE_SHOP_ID,
    MASTER_TABLES,
    TENANT_TABLES,
)
from handyshop_migration.devtools.seed.vocabulary import (
    _ARTICLES,
    _BRAND_NAMES,
    _CITIES,
    _CONDITIONS,
    _DEVICE_COMBOS,
    _DEVICE_LIST,
    _DEVICE_TYPE_NAMES,
    _EMOJI,
    _ENTITIES,
    _FIRST,
    _FOLD,
    _ISSUES,
    _KIOSK_NAMES,
    _LAST,
    _LOANER_STATUS,
    _MAIL_DOMAINS,
    _MODEL_NAMES,
    _NOTES,
    _PARTS,
    _PERMISSIONS,
    _PRICES,
    _REPAIR_STATUSES,
    _STATUS_FLOW,
    _STREETS,
    _SUPPLIERS,
    _SUPPORT_REASONS,
    _TECH_NOTES,
    _TEMPLATES,
)

# --------------------------------------------------------------------------------------------------
# Generation state
# --------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """One value of shop_id (a shop, NULL, a global id or an orphan id) and what its rows may reference."""

    gi: int
    shop: int | None
    seed_key: str
    start: int
    end: int
    counts: dict[str, int]
    user_ids: list[int] = field(default_factory=list)  # candidates for user_id columns; empty -> NULL
    user_emails: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # display names for created_by/changed_by
    owner_id: int | None = None
    employees: list[tuple[int, str, str, str]] = field(default_factory=list)  # (user id, first, last, email)
    kiosk_user_id: int | None = None
    superadmin_id: int | None = None
    cross_customer_group: int | None = None  # plant: repair #0 takes its customer from this group

    @property
    def shop_s(self) -> str:
        return _opt(self.shop)

    def rng(self, table: str) -> random.Random:
        # One stream per (table, group): a table's rows do not change when another table's counts do.
        return random.Random(f"{self.seed_key}/{table}")


@dataclass
class _State:
    groups: list[_Group]
    signatures: list[str]
    ids: dict[str, list[array]] = field(default_factory=dict)  # table -> per group: ids in generation order
    ts: dict[str, list[array]] = field(default_factory=dict)  # table -> per group: created_at (seconds)

    def new_table(self, table: str, keep_ts: bool = False) -> None:
        self.ids[table] = [array("q") for _ in self.groups]
        if keep_ts:
            self.ts[table] = [array("q") for _ in self.groups]


_Row = tuple[int, int, str]  # (created_at seconds, group index, the row's text after the id column)
_RowGenerator = Callable[[_State, _Group, int], Iterator[_Row]]


def _times(rng: random.Random, start: int, end: int, n: int) -> Iterator[int]:
    """n increasing timestamps spread over [start, end], generated lazily (a 1 M-row shop stays flat)."""
    step = max(end - start, 1) / max(n, 1)
    t = float(start)
    rnd = rng.random
    for _ in range(n):
        t += step * 2 * rnd()
        yield min(int(t), end)


def _pick(rng: random.Random, values: list[int] | array) -> int:
    return values[int(rng.random() * len(values))]


def _user(rng: random.Random, g: _Group) -> str:
    return str(_pick(rng, g.user_ids)) if g.user_ids else N


# --------------------------------------------------------------------------------------------------
# Row generators, one per tenant table. Each yields rows of one group in created_at order, and refers
# only to parents of its own group (except the planted cross-shop reference).
# --------------------------------------------------------------------------------------------------


def _gen_customers(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("customers")
    rnd = rng.random
    people = [(_e(f), _e(last), f"{f}.{last}".translate(_FOLD).lower()) for f in _FIRST for last in _LAST]
    places = [(z, _e(c)) for z, c in _CITIES]
    streets = [_e(s) for s in _STREETS]
    gi, shop = g.gi, g.shop_s
    for t in _times(rng, g.start, g.end, n):
        first, last, mail = people[int(rnd() * len(people))]
        if rnd() < 0.05:
            first = f"{first} {_EMOJI[int(rnd() * len(_EMOJI))]}"
        phone = f"+43 6{60 + int(rnd() * 40)} {1000000 + int(rnd() * 8999999)}"
        email = N if rnd() < 0.3 else f"{mail}{int(rnd() * 100)}@{_MAIL_DOMAINS[int(rnd() * len(_MAIL_DOMAINS))]}"
        if rnd() < 0.4:
            address = zip_code = city = N
        else:
            zip_code, city = places[int(rnd() * len(places))]
            address = f"{streets[int(rnd() * len(streets))]} {1 + int(rnd() * 120)}"
        by = "KIOSK-MODUS" if rnd() < 0.1 or not g.names else g.names[int(rnd() * len(g.names))]
        yield t, gi, f"{first}\t{last}\t{phone}\t{email}\t{address}\t{zip_code}\t{city}\t{_ts(t)}\t{_user(rng, g)}\t{shop}\t{by}"


def _gen_loaner_devices(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("loaner_devices")
    for t in _times(rng, g.start, g.end, n):
        dtype, brand, model = (_e(v) for v in rng.choice(_DEVICE_LIST))
        imei = f"35{rng.getrandbits(48) % 10**13:013d}" if rng.random() < 0.8 else N
        notes = rng.choice(_NOTES) if rng.random() < 0.3 else N
        updated = min(t + rng.randrange(30 * DAY), g.end)
        yield t, g.gi, (
            f"{dtype}\t{brand}\t{model}\t{imei}\t{_e(rng.choice(_CONDITIONS))}\t{rng.choice(_LOANER_STATUS)}\t"
            f"{notes}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(updated)}"
        )


def _gen_repairs(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("repairs")
    rnd = rng.random
    gi, shop = g.gi, g.shop_s
    customers = st.ids["customers"][gi]
    loaners = st.ids["loaner_devices"][gi]
    ts_out = st.ts["repairs"][gi]
    sigs = st.signatures
    prefix = _letters(g.shop) if g.shop is not None else ""
    users = [str(u) for u in g.user_ids] or [N]
    names = [_e(x) for x in g.names] + ["KIOSK-MODUS"]
    codes = [_hex(rng, 32) for _ in range(32)]
    combos, notes, tech, statuses, prices = _DEVICE_COMBOS, _NOTES, _TECH_NOTES, _REPAIR_STATUSES, _PRICES
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        ts_out.append(t)
        if k == 0 and g.cross_customer_group is not None:
            customer = str(st.ids["customers"][g.cross_customer_group][0])
        elif customers and rnd() < 0.97:
            # Customers are spread over the same period: keep to those probably created before the repair.
            customer = str(customers[int(rnd() * min(len(customers), 1 + len(customers) * (k + 1) // n))])
        else:
            customer = N
        # The real app's fallback code is RA-<epoch ms>; shops use their letters and a counter.
        code = f"{prefix}{1000 + k}" if prefix else f"RA-{(t + 1577836800) * 1000 + k}"
        status = statuses[int(rnd() * len(statuses))]
        created = _ts(t)
        changed = _ts(min(t + int(rnd() * 10 * DAY), g.end))
        serial = f"{int(rnd() * 10**15):015d}" if rnd() < 0.5 else N
        deposit = "20,00" if rnd() < 0.2 else N
        note = notes[int(rnd() * len(notes))] if rnd() < 0.25 else N
        if rnd() < 0.4:
            dsig, dsat = sigs[int(rnd() * len(sigs))], created
        else:
            dsig = dsat = N
        if status == "abgeholt" and rnd() < 0.5:
            psig, psat = sigs[int(rnd() * len(sigs))], changed
        else:
            psig = psat = N
        r = rnd()
        if r < 0.2:
            dcode, dtype = "enc:v1:" + codes[int(rnd() * 32)], "text"
        elif r < 0.3:
            dcode, dtype = codes[int(rnd() * 32)] + codes[int(rnd() * 32)], "pattern"
        else:
            dcode = dtype = N
        loaner = str(loaners[int(rnd() * len(loaners))]) if loaners and rnd() < 0.03 else N
        by = "GELÖSCHTER MITARBEITER" if rnd() < 0.01 else names[int(rnd() * len(names))]
        day = _DAYS[t // DAY]
        yield t, gi, (
            f"{code}\t{customer}\t{combos[int(rnd() * len(combos))]}\t{serial}\t{prices[int(rnd() * len(prices))]}\t"
            f"{deposit}\t{note}\t{status}\t{created}\t{changed}\t{changed}\t{users[int(rnd() * len(users))]}\t"
            f"{shop}\t{by}\t{_b(rnd() < 0.3)}\t{day[0:4]}{day[5:7]}\t{dsig}\t{psig}\t{dsat}\t{psat}\t"
            f"{tech[int(rnd() * len(tech))] if rnd() < 0.2 else N}\t{dcode}\t{dtype}\t{loaner}"
        )


def _child_times(rng: random.Random, st: _State, g: _Group, n: int, max_delay: int) -> list[tuple[int, int]]:
    """n (time, repair ordinal) pairs for rows that follow a repair of the group, sorted by time."""
    repairs = st.ts["repairs"][g.gi]
    out = []
    for _ in range(n):
        k = int(rng.random() * len(repairs))
        out.append((min(repairs[k] + int(rng.random() * max_delay), g.end), k))
    out.sort()
    return out


def _gen_repair_status_history(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("repair_status_history")
    repairs, repair_ts = st.ids["repairs"][g.gi], st.ts["repairs"][g.gi]
    rows: list[tuple[int, str]] = []
    while len(rows) < n:
        # One repair's path through the statuses, a few hours to days apart.
        k = int(rng.random() * len(repairs))
        t, old = repair_ts[k], N
        for new in _STATUS_FLOW[: 1 + rng.randrange(len(_STATUS_FLOW))]:
            if len(rows) >= n:
                break
            if new in ("ersatzteile_bestellen", "warten_auf_ersatzteile", "ersatzteil_eingetroffen") and rng.random() < 0.6:
                continue
            who = _e(rng.choice(g.names)) if g.names else "SYSTEM"
            note = rng.choice(_NOTES) if rng.random() < 0.1 else N
            rows.append((t, f"{repairs[k]}\t{old}\t{new}\t{_ts(t)}\t{who}\t{note}\t{_user(rng, g)}\t{g.shop_s}"))
            old, t = new, min(t + rng.randrange(HOUR, 3 * DAY), g.end)
    rows.sort(key=lambda r: r[0])
    for t, tail in rows:
        yield t, g.gi, tail


def _gen_spare_parts(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("spare_parts")
    repairs = st.ids["repairs"][g.gi]
    for t, k in _child_times(rng, st, g, n, 2 * DAY):
        status = rng.choice(("bestellen", "bestellt", "eingetroffen", "erledigt"))
        ordered = _ts(t + HOUR) if status != "bestellen" else N
        delivered = _ts(min(t + 3 * DAY, g.end)) if status in ("eingetroffen", "erledigt") else N
        cost = rng.randrange(500, 25000) / 100
        note = rng.choice(_NOTES) if rng.random() < 0.15 else N
        yield t, g.gi, (
            f"{repairs[k]}\t{_e(rng.choice(_PARTS))}\t{_e(rng.choice(_SUPPLIERS))}\t{cost!r}\t{status}\t{ordered}\t"
            f"{delivered}\t{note}\t{_b(status == 'erledigt' and rng.random() < 0.5)}\t{_user(rng, g)}\t{g.shop_s}\t"
            f"{_ts(t)}\t{_ts(min(t + 4 * DAY, g.end))}"
        )


def _gen_cost_estimates(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("cost_estimates")
    customers = st.ids["customers"][g.gi]
    per_month: dict[str, int] = {}
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        day = _DAYS[t // DAY]
        yymm = day[2:4] + day[5:7]
        per_month[yymm] = per_month.get(yymm, 0) + 1
        # KV-YYMM-NNN is counted per shop; the shop suffix keeps it unique across shops (§3.3).
        ref = f"KV-{yymm}-{per_month[yymm]:03d}-S{g.shop}"
        dtype, brand, model = rng.choice(_DEVICE_LIST)
        issue = rng.choice(_ISSUES)
        items: list[dict[str, object]] = []
        subtotal = 0
        for _ in range(1 + rng.randrange(3)):
            price = rng.randrange(1500, 30000, 10)
            qty = 1 if rng.random() < 0.8 else 2
            subtotal += price * qty
            items.append({"description": f"{issue} – {model}", "quantity": qty,
                          "unitPrice": _euro(price), "totalPrice": _euro(price * qty)})
        tax = subtotal * 20 // 100  # tax is hard-coded to 20 % in the app
        # Legacy rows hold the array double-encoded: a jsonb *string* containing the escaped array (§5.11).
        items_json = json.dumps(items, ensure_ascii=False)
        items_value = json.dumps(items_json, ensure_ascii=False) if k == 0 or rng.random() < 0.1 else items_json
        status = rng.choice(("offen", "offen", "angenommen", "abgelehnt"))
        yield t, g.gi, "\t".join((
            ref, str(_pick(rng, customers)), _e(dtype), _e(brand), _e(model), _e(issue),
            f"{rng.getrandbits(40) % 10**12:012d}" if rng.random() < 0.4 else N,
            _e(f"Kostenvoranschlag {model}"),
            _e(f"{issue}: Reparatur inkl. Ersatzteil und Arbeitszeit") if rng.random() < 0.7 else N,
            rng.choice(_NOTES) if rng.random() < 0.2 else N,
            status, _b(status == "angenommen" and rng.random() < 0.7), _ts(t + 14 * DAY),
            _euro(subtotal), "20", _euro(tax), _euro(subtotal + tax), _e(items_value), _ts(t),
            _ts(min(t + DAY, g.end)), _user(rng, g), g.shop_s,
        ))


def _gen_email_templates(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("email_templates")
    is_global = g.shop is None or g.shop == GLOBAL_TEMPLATE_SHOP_ID
    owner = g.superadmin_id if is_global else g.owner_id
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        name, subject, body, variables = _TEMPLATES[k % len(_TEMPLATES)]
        if k >= len(_TEMPLATES):
            name = f"{name} ({k // len(_TEMPLATES) + 1})"
        kind = "app" if is_global or rng.random() < 0.2 else "customer"
        yield t, g.gi, (
            f"{_e(name)}\t{_e(subject)}\t{_e(body)}\t{_text_array(variables)}\t{_opt(owner)}\t{g.shop_s}\t"
            f"{kind}\t{_ts(t)}\t{_ts(min(t + rng.randrange(DAY, 90 * DAY), g.end))}"
        )


def _gen_orders(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("orders")
    customers = st.ids["customers"][g.gi]
    for t in _times(rng, g.start, g.end, n):
        article, price = rng.choice(_ARTICLES)
        qty = 1 + int(rng.random() < 0.2)
        stock = rng.random() < 0.25
        status = rng.choice(("bestellen", "bestellt", "eingetroffen", "erledigt"))
        yield t, g.gi, "\t".join((
            _e(article), str(qty), _euro(price), _euro(price * qty), "10,00" if rng.random() < 0.3 else N,
            rng.choice(_NOTES) if rng.random() < 0.1 else N,
            N if stock else str(_pick(rng, customers)), "lager" if stock else "kundenbestellung", status,
            _b(status == "erledigt"), _b(status in ("eingetroffen", "erledigt")), _user(rng, g), g.shop_s,
            _ts(t), _ts(min(t + 5 * DAY, g.end)),
        ))


def _gen_device_types(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("device_types")
    for k, t in enumerate(_times(rng, g.start, g.start + 30 * DAY, n)):
        name = _DEVICE_TYPE_NAMES[k % len(_DEVICE_TYPE_NAMES)]
        if k >= len(_DEVICE_TYPE_NAMES):
            name = f"{name} {k // len(_DEVICE_TYPE_NAMES) + 1}"
        yield t, g.gi, f"{_e(name)}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(t)}"


def _gen_user_brands(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("user_brands")
    types = st.ids["device_types"][g.gi]
    for k, t in enumerate(_times(rng, g.start + 30 * DAY, g.start + 60 * DAY, n)):
        name = _BRAND_NAMES[k % len(_BRAND_NAMES)]
        yield t, g.gi, f"{_e(name)}\t{_pick(rng, types)}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(t)}"


def _gen_user_models(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("user_models")
    brands = st.ids["user_brands"][g.gi]
    for t in _times(rng, g.start + 60 * DAY, g.end, n):
        brand = N if rng.random() < 0.05 else str(_pick(rng, brands))  # brand_id is nullable in the app
        yield t, g.gi, f"{_e(rng.choice(_MODEL_NAMES))}\t{brand}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(t)}"


def _gen_qr_codes(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("qr_codes")
    repairs = st.ids["repairs"][g.gi]
    for t, k in _child_times(rng, st, g, n, HOUR):
        status = rng.choice(("pending", "signed", "completed", "completed", "expired"))
        signed = status in ("signed", "completed")
        dtype, brand, model = rng.choice(_DEVICE_LIST)
        data = {"repairId": repairs[k], "customerName": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                "deviceType": dtype, "brand": brand, "model": model, "issue": rng.choice(_ISSUES)}
        yield t, g.gi, "\t".join((
            _uuid(rng), _json(data), rng.choice(st.signatures) if signed else N,
            _ts(t + 300) if signed else N, _ts(t), _ts(t + DAY), _user(rng, g), g.shop_s, status,
        ))


def _gen_signatures(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("signatures")
    repairs = st.ids["repairs"][g.gi]
    for t, k in _child_times(rng, st, g, n, 5 * DAY):
        kind = "customer_dropoff" if rng.random() < 0.6 else "customer_pickup"
        yield t, g.gi, f"{repairs[k]}\t{kind}\t{rng.choice(st.signatures)}\t{_ts(t)}\t{_ts(t)}\t{g.shop_s}"


def _gen_email_log(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("email_log")
    repairs, templates = st.ids["repairs"][g.gi], st.ids["email_templates"][g.gi]
    for t, k in _child_times(rng, st, g, n, 7 * DAY):
        tk = int(rng.random() * len(templates)) if templates else -1
        template = str(templates[tk]) if tk >= 0 and rng.random() < 0.9 else N
        subject = _TEMPLATES[tk % len(_TEMPLATES)][1].replace("{{auftragsnummer}}", f"#{repairs[k]}")
        mail = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}".translate(_FOLD).lower() + "@" + rng.choice(_MAIL_DOMAINS)
        status = "success" if rng.random() < 0.92 else "failed"
        yield t, g.gi, f"{repairs[k]}\t{template}\t{_e(subject)}\t{_e(mail)}\t{_ts(t)}\t{status}\t{_user(rng, g)}\t{g.shop_s}"


def _gen_newsletter_subscribers(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("newsletter_subscribers")
    for t in _times(rng, g.start, g.end, n):
        k = int(rng.random() * len(g.user_ids))
        status = rng.choice(("sent", "sent", "sent", "pending", "failed"))
        yield t, g.gi, (
            f"{g.user_ids[k]}\t{_e(g.user_emails[k])}\t{status}\t{_b(rng.random() < 0.1)}\t"
            f"{_ts(t + 60) if status == 'sent' else N}\t{_ts(t)}\t{g.shop_s}"
        )


def _gen_kiosk_devices(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("kiosk_devices")
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        pin = "1234" if rng.random() < 0.7 else f"{rng.randrange(10000):04d}"  # the app's default PIN
        name = _KIOSK_NAMES[k % len(_KIOSK_NAMES)]
        yield t, g.gi, (
            f"{_opt(g.kiosk_user_id)}\t{_e(name)}\t{pin}\t{_b(rng.random() < 0.9)}\t{_ts(t)}\t"
            f"{_ts(min(t + 10 * DAY, g.end))}\t{g.shop_s}"
        )


def _gen_kiosk_online_status(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("kiosk_online_status")
    devices = st.ids["kiosk_devices"][g.gi]
    for k in range(n):
        t = g.end - rng.randrange(30 * DAY)
        yield t, g.gi, f"{devices[k % len(devices)]}\t{_b(rng.random() < 0.2)}\t{_ts(t)}\t{g.shop_s}"


def _gen_employees(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("employees")
    starts = sorted(g.start + rng.randrange(max(g.end - g.start, 1)) for _ in range(n))
    for k, t in enumerate(starts):
        uid, first, last, mail = g.employees[k % len(g.employees)]
        yield t, g.gi, (
            f"{uid}\t{_e(first)}\t{_e(last)}\t{_e(mail)}\t{_json(rng.choice(_PERMISSIONS))}\t"
            f"{_b(rng.random() < 0.9)}\t{_ts(t)}\t{g.shop_s}"
        )


def _gen_support_access_tokens(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("support_access_tokens")
    for t in _times(rng, g.start, g.end, n):
        active = t > g.end - DAY
        yield t, g.gi, "\t".join((
            _opt(g.superadmin_id), _e(rng.choice(_SUPPORT_REASONS)), rng.choice(("read", "full")),
            _e(rng.choice(_ENTITIES)), _ts(t), N if active else _ts(t + rng.randrange(600, 4 * HOUR)),
            _b(active), _hex(rng, 64), g.shop_s,
        ))


_GENERATORS: dict[str, _RowGenerator] = {
    "customers": _gen_customers,
    "loaner_devices": _gen_loaner_devices,
    "repairs": _gen_repairs,
    "repair_status_history": _gen_repair_status_history,
    "spare_parts": _gen_spare_parts,
    "cost_estimates": _gen_cost_estimates,
    "email_templates": _gen_email_templates,
    "orders": _gen_orders,
    "device_types": _gen_device_types,
    "user_brands": _gen_user_brands,
    "user_models": _gen_user_models,
    "qr_codes": _gen_qr_codes,
    "signatures": _gen_signatures,
    "email_log": _gen_email_log,
    "newsletter_subscribers": _gen_newsletter_subscribers,
    "kiosk_devices": _gen_kiosk_devices,
    "kiosk_online_status": _gen_kiosk_online_status,
    "employees": _gen_employees,
    "support_access_tokens": _gen_support_access_tokens,
}
assert tuple(_GENERATORS) == TENANT_TABLES and set(_COLUMNS) == set(TENANT_TABLES) | set(MASTER_TABLES)


