"""Phase 0's plan of the fleet: every shop of the shared database placed by the policy (on paper), and each
server's connection budget with the tenants it would then hold. Read-only: nothing is placed or created.

The plan is refused (`ok` false) when a shop has no server (every server full, or over its connection budget
with one more tenant, or a pin to a server that cannot take it) or when a server is over its budget already.
Phase 1 provisions nothing while the latest plan is refused (`pipeline/gates.py`), and the placement checks
the same limits again before each provisioning, so the plan is advice the pipeline enforces, not a promise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from handyshop_migration.tenancy.errors import PlacementRefused
from handyshop_migration.tenancy.fleet.budget import ServerBudget
from handyshop_migration.tenancy.fleet.config import format_bytes
from handyshop_migration.tenancy.fleet.placement import Placement, ServerUsage


@dataclass
class FleetPlan:
    usage: dict[str, ServerUsage]  # each server with the planned tenants added
    budgets: list[ServerBudget]
    placed: dict[int, str] = field(default_factory=dict)  # shops placed by this plan (not placed before)
    unplaced: dict[int, str] = field(default_factory=dict)  # shop -> why no server can take it

    @property
    def over_budget(self) -> list[ServerBudget]:
        return [b for b in self.budgets if not b.ok]

    @property
    def unplaced_by_budget(self) -> dict[int, str]:
        return {s: why for s, why in self.unplaced.items() if "connection budget" in why}

    @property
    def unplaced_by_capacity(self) -> dict[int, str]:
        return {s: why for s, why in self.unplaced.items() if "connection budget" not in why}

    @property
    def budget_ok(self) -> bool:
        return not self.over_budget and not self.unplaced_by_budget

    @property
    def capacity_ok(self) -> bool:
        return not self.unplaced_by_capacity

    @property
    def ok(self) -> bool:
        return self.budget_ok and self.capacity_ok

    def table(self) -> str:
        rows = ["| server | databases | bytes | tenants | connections needed / usable | budget |", "|---|---|---|---|---|---|"]
        for b in self.budgets:
            u = self.usage.get(b.server, ServerUsage(b.server))
            rows.append(
                f"| {b.server} | {u.databases} | {format_bytes(u.bytes)} | {u.tenants} | {b.needed} / {b.usable} | "
                f"{'ok' if b.ok else 'EXCEEDED'} |"
            )
        return "\n".join(rows)

    def balance(self) -> float | None:
        """Largest over smallest bytes per server (None with fewer than two servers holding anything)."""
        held = [u.bytes for u in self.usage.values() if u.bytes]
        return max(held) / min(held) if len(held) > 1 else None


def plan_fleet(placement: Placement, shop_ids: Sequence[int], estimates: Mapping[int, int]) -> FleetPlan:
    """Place every shop of `shop_ids` not placed yet, in id order, as the policy would (see the module doc)."""
    usage = placement.usage()
    have = {d.shop_id for d in placement.databases() if d.kind == "tenant"}
    plan = FleetPlan(usage, [])
    for shop in sorted(set(shop_ids) - have):
        estimate = estimates.get(shop, 0)
        try:
            server, _ = placement.choose(shop, estimate, usage)
        except PlacementRefused as exc:
            plan.unplaced[shop] = str(exc)
            continue
        usage[server] = usage.get(server, ServerUsage(server)).plus(estimate)
        plan.placed[shop] = server
    plan.budgets = placement.budgets(usage)
    return plan


__all__ = ["FleetPlan", "plan_fleet"]
