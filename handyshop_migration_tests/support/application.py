"""The simulated application as scenario tests drive it: routed through `route()`, writing in a thread,
waited for by the number of writes it made (a stuck writer fails the test with its first errors)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from handyshop_migration.devtools.simulation import SimulatedApp
from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.routing import RouteResolver
from handyshop_migration.tenancy.dsn import ConnectionSpec


@contextmanager
def routed_app(
    control: ConnectionSpec, cipher: CredentialCipher, shop_ids: Sequence[int], *, seed: int, ttl: float
) -> Iterator[SimulatedApp]:
    resolver = RouteResolver(control, cipher, control, ttl=ttl)
    app = SimulatedApp(control, resolver, list(shop_ids), seed=seed)
    try:
        yield app
    finally:
        app.close()
        resolver.close()


@contextmanager
def writing(app: SimulatedApp) -> Iterator[None]:
    """The application writes meanwhile; stopped before anyone checks what it wrote."""
    thread, stop = app.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def wait_for_writes(app: SimulatedApp, at_least: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(app.writes.values()) < at_least:
        assert time.monotonic() < deadline, f"the writer made only {sum(app.writes.values())} writes: {app.errors[:3]}"
        assert not app.errors, app.errors[:3]
        time.sleep(0.05)
