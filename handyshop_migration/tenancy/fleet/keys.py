"""Key rotation of the registry: every entry re-encrypted under the new `TENANT_ENCRYPTION_KEY`, resumably.

Start it with the new key in `TENANT_ENCRYPTION_KEY` and the old one(s) in `TENANT_ENCRYPTION_OLD_KEYS`.
Entries go in batches (`batch` per transaction, in shop order), each only once

- both its tokens (the application role's and the owner's) decrypt under their old key,
- the new tokens decrypt to exactly the same passwords, and
- both roles log in to the shop's tenant database with them (`SELECT 1` as each),

so an entry under the new key is one that is known to work. An entry that fails any of these stays under its
old key (readable as before) and is reported with why; a tenant server that is down is such a case. Each
batch commits on its own: interrupted anywhere, a rerun continues with what is left (entries under the active
key are not touched again). The report counts what remains under each old key id: when it is zero, the old
key can be removed from `TENANT_ENCRYPTION_OLD_KEYS`.

Applications reading tokens through `route()` keep working throughout: they hold every key the registry may
use until the rotation is done (the routing contract's key id tells which one opens a token).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.dsn import PINNED_SEARCH_PATH
from handyshop_migration.tenancy.errors import HandyshopError
from handyshop_migration.tenancy.secrets import one_line


@dataclass
class RotationReport:
    active_key_id: str
    rotated: int = 0
    batches: int = 0
    left: dict[int, str] = field(default_factory=dict)  # shop -> why it stayed under its old key
    remaining: dict[str, int] = field(default_factory=dict)  # old key id -> entries still under it
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        """No entry is under an old key any more: the old keys can be removed."""
        return not self.remaining

    def summary(self) -> str:
        rest = ", ".join(f"{n} under key id {k}" for k, n in sorted(self.remaining.items())) or "none under old keys"
        return (
            f"{self.rotated} entries re-encrypted under key id {self.active_key_id} in {self.batches} batches "
            f"({self.seconds:.1f}s); remaining: {rest}"
            + (f"; {len(self.left)} left under their old key: " + "; ".join(
                f"shop {s}: {why}" for s, why in sorted(self.left.items())[:10]) if self.left else "")
        )


def check_logins(creds: TenantCredentials, *, timeout: int = 5) -> str | None:
    """None if both of the shop's roles log in to its tenant database with these passwords, else why not."""
    for label, spec in (("application role", creds.spec()), ("owner role", creds.owner_spec())):
        try:
            with spec.connect(connect_timeout=timeout, settings=PINNED_SEARCH_PATH) as conn:
                conn.execute("SELECT 1")
        except HandyshopError as exc:
            return f"the {label} {spec.user} does not log in: {one_line(exc)}"
    return None


def rotate_registry(
    registry: ConnectionRegistry, *, batch: int = 100, verify_logins: bool = True, logins_at_once: int = 8,
    max_batches: int | None = None,
) -> RotationReport:
    """Re-encrypt every entry not under the active key (see the module doc). `max_batches` stops early
    (the rest waits for the next run: what an interrupted rotation looks like)."""
    started = time.perf_counter()
    report = RotationReport(registry.cipher.key_id)
    after = -1
    with ThreadPoolExecutor(max_workers=max(1, logins_at_once), thread_name_prefix="login") as pool:
        checked: dict[int, tuple[TenantCredentials, str | None]] = {}

        def verify(creds: TenantCredentials) -> str | None:
            if not verify_logins:
                return None
            seen = checked.get(creds.shop_id)
            if seen is None:
                return "registered while the batch was checked; run the rotation again"
            if (seen[0].password, seen[0].owner_password) != (creds.password, creds.owner_password):
                return "its passwords changed while the batch was checked; run the rotation again"
            return seen[1]

        while max_batches is None or report.batches < max_batches:
            if verify_logins:
                # Logins first, in parallel, outside the batch's transaction (its row locks stay short).
                entries = registry.entries_under_old_keys(batch, after=after)
                if not entries:
                    break
                checked = {c.shop_id: (c, why) for c, why in zip(entries, pool.map(check_logins, entries), strict=True)}
            rotated, left, last = registry.rotate_batch(batch, verify, after=after)
            if last is None:
                break
            report.rotated += rotated
            report.left.update(left)
            report.batches += 1
            after = last
    report.remaining = {k: n for k, n in registry.key_ids().items() if k != registry.cipher.key_id}
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["RotationReport", "check_logins", "rotate_registry"]
