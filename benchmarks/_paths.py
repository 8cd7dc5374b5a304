"""The migration as operators run it, measured from outside: `end_to_end.py --paths daemon,cli` (module `_paths`).

Each path gets a stack of its own (an embedded PostgreSQL 18, durable, holding the shared database, the tenant
databases and Dagster's storage; a DAGSTER_HOME with the packaged dagster.yaml, or the one `--baseline-yaml`
names), seeded the same way (`--shops`, `--scale`), and runs only commands an operator runs:

- `daemon`: `handyshop-migration prepare` (phase 0), then docker-compose.yml's Dagster services as local
  processes with their compose commands (code server, webserver, daemon; as test_deploy.py runs them): the
  new_shops_sensor turns every shop into a partition and launches one run each; the queue, the launcher and
  the pools of dagster.yaml do the rest. Timed from the moment the services start until every shop's
  lifecycle says verified (polled once a second, one query).
- `cli`: `handyshop-migration prepare`, then `handyshop-migration migrate --shops all --workers W`, timed
  from outside as a whole (its start-up included).
- `daemon-alt`: `daemon` with `--alt-yaml` as dagster.yaml (a candidate setting measured beside the shipped one).
- `daemon-baseline`: `daemon` with `--baseline-yaml` as the instance's dagster.yaml (e.g. main's) and main's
  code server command (`dagster code-server start`), so the deployment's changes are measured against what
  they replace in the same run.

Afterwards, read from the path's Dagster storage: every shop's per-partition check results (19 tables x 2
parity checks + tenant_access), all passed; the runs per shop; storage sessions the server counted.
Paths run one after another in the order given (interleave, e.g. `daemon,cli,daemon-baseline`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import verdict

TARGET_SHOPS = 1_000
TARGET_RATE = 50.0  # shops per minute: 1,000 shops in 20 minutes
PARITY_PER_SHOP = 19 * 2


def _cli(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def _cpu_of_sessions(sids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system, with reaped children) of every live process in each session, by name."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {name: 0.0 for name in sids}
    by_sid = {sid: name for name, sid in sids.items()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = by_sid.get(int(fields[3]))  # session id
        if name is not None:
            out[name] += sum(int(x) for x in fields[11:15]) / ticks  # utime stime cutime cstime
    return out


def _postgres_cpu(pgdata: Path) -> float:
    """CPU seconds of the server: the postmaster with its reaped backends, plus the live ones."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        sid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return 0.0
    return _cpu_of_sessions({"postgres": sid})["postgres"]


def _states(source: Any) -> dict[str, int]:
    with source.connect() as conn:
        exists = conn.execute("SELECT to_regclass('handyshop_migration.shop_lifecycle') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return {}
        rows = conn.execute("SELECT state, count(*) FROM handyshop_migration.shop_lifecycle GROUP BY state").fetchall()
    return {str(s): int(n) for s, n in rows}


def _storage_report(storage: Any, shops: int) -> dict[str, Any]:
    with storage.connect() as conn:
        per_partition = conn.execute(
            "SELECT partition, count(*) FILTER (WHERE execution_status = 'SUCCEEDED'), count(*) "
            "FROM asset_check_executions WHERE partition IS NOT NULL GROUP BY partition"
        ).fetchall()
        parity = conn.execute(
            "SELECT partition, count(DISTINCT (asset_key, check_name)) FROM asset_check_executions "
            "WHERE execution_status = 'SUCCEEDED' AND check_name IN ('row_count_parity', 'checksum_parity') "
            "AND partition IS NOT NULL GROUP BY partition"
        ).fetchall()
        runs = conn.execute(
            "SELECT r.status, count(*) FROM runs r WHERE r.pipeline_name = 'migrate_shop' GROUP BY r.status"
        ).fetchall()
    complete = sum(1 for _, n in parity if n == PARITY_PER_SHOP)
    return {
        "partitions_with_checks": len(per_partition),
        "shops_with_all_parity": complete,
        "failed_check_executions": sum(total - ok for _, ok, total in per_partition),
        "runs": {str(s): int(n) for s, n in runs},
        "check_ok": complete == shops,
    }


def _sessions(admin: Any, dbname: str) -> int:
    with admin.connect(autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _prepare(env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("ab") as out:
        subprocess.run([_cli("handyshop-migration"), "prepare"], env=env, check=True, stdout=out,
                       stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def run_path(path: str, args: Any, root: Path, baseline_yaml: Path | None) -> dict[str, Any]:
    """One path on a stack of its own; returns its figures."""
    from handyshop_migration.devtools.embedded import EmbeddedPostgres
    from handyshop_migration.devtools.local import STORAGE_DB, LocalStack
    from handyshop_migration.devtools.seed import ensure_database, seed_database

    if path == "daemon-baseline" and args.baseline_shops:
        args = type(args)(**{**vars(args), "shops": args.baseline_shops})
    home = root / path
    stack = LocalStack(home)
    stack.reset()
    home.mkdir(parents=True)
    # Room for phase 0's connection budget (2 per shop planned) and the storage's pooled connections.
    EmbeddedPostgres(home / "pgdata", version=18, durable=True, max_connections=2 * args.shops + 300).start()
    stack.start()
    report: dict[str, Any] = {"path": path, "shops": args.shops, "load_before": _load()}
    try:
        if path == "daemon-baseline":
            assert baseline_yaml is not None, "--baseline-yaml is needed for daemon-baseline"
            shutil.copyfile(baseline_yaml, stack.dagster_home / "dagster.yaml")
        elif path == "daemon-alt":
            assert args.alt_yaml, "--alt-yaml is needed for daemon-alt"
            shutil.copyfile(args.alt_yaml, stack.dagster_home / "dagster.yaml")
        stack.ensure_storage()
        source = ensure_database(stack.admin, "handyshop")
        started = time.perf_counter()
        seed_database(source, shops=args.shops, scale=args.scale, seed=42)
        report["seed_seconds"] = time.perf_counter() - started
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env.update(stack.environment())
        env["HANDYSHOP_ARCHIVE_DIR"] = str(home / "archives")
        if args.sensor_interval:
            env["HANDYSHOP_SENSOR_INTERVAL_SECONDS"] = str(args.sensor_interval)
        log = home / f"{path}.log"
        report["log"] = str(log)
        sessions_before = _sessions(stack.admin, STORAGE_DB)
        report["phase0_seconds"] = _prepare(env, log)
        args.pgdata = home / "pgdata"
        args.pg_cpu_before = _postgres_cpu(args.pgdata)
        if path.startswith("daemon"):
            report.update(_daemon(env, source, args, log, baseline=path == "daemon-baseline"))
        else:
            report.update(_migrate(env, args, log))
        report["storage_sessions"] = _sessions(stack.admin, STORAGE_DB) - sessions_before
        report["states"] = _states(source)
        report.update(_storage_report(stack.admin.with_db(STORAGE_DB), args.shops))
        report["load_after"] = _load()
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return report


COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
WORKSPACE = "deploy/workspace.docker.yaml"
# main's user-code command before the forking code server (what daemon-baseline runs)
BASELINE_CODE_SERVER = ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m",
                        "handyshop_migration.definitions", "--location-name", "handyshop_migration"]


def _local(command: list[str], port: int | None) -> list[str]:
    """A compose command on 127.0.0.1 (and `port`), with this virtualenv's executables."""
    out = [str(a) for a in command]
    for i, arg in enumerate(out[:-1]):
        if arg in ("-h", "--host") and out[i + 1] == "0.0.0.0":
            out[i + 1] = "127.0.0.1"
        elif arg in ("-p", "--port") and port is not None:
            out[i + 1] = str(port)
    out[0] = _cli(out[0]) if out[0] != "python" else sys.executable
    return out


def _daemon(env: dict[str, str], source: Any, args: Any, log: Path, baseline: bool = False) -> dict[str, Any]:
    """docker-compose.yml's three Dagster services as local processes (their own commands, compose's
    environment values), as test_deploy.py runs them; timed from the code server's start."""
    import signal

    import yaml

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    code_port, web_port = _free_port(), _free_port()
    env = {**env, "DAGSTER_CODE_SERVER_HOST": "127.0.0.1", "DAGSTER_CODE_SERVER_PORT": str(code_port)}
    code = BASELINE_CODE_SERVER if baseline else services["user-code"]["command"]
    commands = [_local(code, code_port), _local(services["dagster-webserver"]["command"], web_port),
                _local(services["dagster-daemon"]["command"], None)]
    out = log.open("ab")
    repo = COMPOSE.parent
    started = time.perf_counter()
    def start(command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=repo,
                                start_new_session=True)

    # compose's order: the code server healthy first (its healthcheck), then the webserver and the daemon
    procs = [start(commands[0])]
    health = [_cli("dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(code_port)]
    while subprocess.run(health, env=env, capture_output=True).returncode != 0:
        if procs[0].poll() is not None or time.perf_counter() - started > 120:
            raise RuntimeError(f"the code server did not become healthy; see {log}")
        time.sleep(0.5)
    procs += [start(c) for c in commands[1:]]
    first_verified = None
    progress: list[tuple[float, int]] = []
    try:
        deadline = started + args.timeout
        while time.perf_counter() < deadline:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a Dagster service exited with {dead[0].returncode}; see {log}")
            states = _states(source)
            verified = states.get("verified", 0)
            failed = states.get("copied", 0)
            now = time.perf_counter() - started
            if verified and first_verified is None:
                first_verified = now
            if not progress or progress[-1][1] != verified:
                progress.append((now, verified))
                if verified % max(1, args.shops // 10) == 0:
                    print(f"   [daemon] {verified}/{args.shops} verified, {now:.0f} s, load {_load()}", flush=True)
            if verified + failed >= args.shops:
                break
            time.sleep(1.0)
        wall = time.perf_counter() - started
        cpu = _cpu_of_sessions({name: p.pid for name, p in zip(("code server and runs", "webserver", "daemon"),
                                                                procs, strict=False)})
        cpu["postgres (whole server)"] = _postgres_cpu(args.pgdata) - args.pg_cpu_before
    finally:
        for p in reversed(procs):  # daemon and webserver first: they hold connections to the code server
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)
        out.close()
    return {"wall_seconds": wall, "first_verified_seconds": first_verified or wall, "progress": progress,
            "cpu": cpu}


def _migrate(env: dict[str, str], args: Any, log: Path) -> dict[str, Any]:
    command = [_cli("handyshop-migration"), "migrate", "--shops", "all"]
    if args.workers:
        command += ["--workers", str(args.workers)]
    started = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    cpu = {"migrate and its workers": usage.ru_utime + usage.ru_stime,
           "postgres (whole server)": _postgres_cpu(args.pgdata) - args.pg_cpu_before}
    return {"wall_seconds": wall, "first_verified_seconds": None, "exit_status": proc.returncode,
            "progress": [], "cpu": cpu}


def print_path(r: dict[str, Any]) -> None:
    shops = r["shops"]
    verified = r["states"].get("verified", 0)
    rate = verified / r["wall_seconds"] * 60
    projection = TARGET_SHOPS / rate + r["phase0_seconds"] / 60 if rate else float("inf")
    print()
    print(f"== {r['path']}: {shops} shops (load {r['load_before']} before, {r['load_after']} after)")
    print(f"   seed {r['seed_seconds']:.1f} s, phase 0 (`prepare`, from outside) {r['phase0_seconds']:.1f} s")
    extra = ""
    if r["path"].startswith("daemon"):
        steady = r["progress"]
        if len(steady) >= 3:
            (t0, n0), (t1, n1) = steady[len(steady) // 10], steady[-1]
            if t1 > t0:
                extra = f"; steady rate (from the {n0}th to the last) {(n1 - n0) / (t1 - t0) * 60:.1f} shops/min"
        extra = f"; first shop verified after {r['first_verified_seconds']:.1f} s" + extra
    else:
        extra = f"; migrate exited {r['exit_status']}"
    print(f"   {verified}/{shops} verified in {r['wall_seconds']:.1f} s: {rate:.1f} shops/min{extra}")
    print(f"   projection for {TARGET_SHOPS:,} shops: {projection:.1f} min (phase 0 + {TARGET_SHOPS:,} / rate); "
          f"target >= {TARGET_RATE:.0f} shops/min  {verdict(rate >= TARGET_RATE)}")
    print(f"   storage: {r['shops_with_all_parity']}/{shops} partitions hold all {PARITY_PER_SHOP} parity checks, "
          f"passed ({r['partitions_with_checks']} partitions with checks, {r['failed_check_executions']} not "
          f"succeeded); migrate_shop runs {r['runs']}; {r['storage_sessions']} storage sessions "
          f"({r['storage_sessions'] / max(shops, 1):.1f} per shop)")
    cpu = r.get("cpu") or {}
    if cpu:
        total = sum(cpu.values())
        print(f"   CPU per shop: {total / max(verified, 1):.2f} s in all = "
              + ", ".join(f"{k} {v / max(verified, 1):.2f}" for k, v in cpu.items())
              + f" (2 cores give {2 * r['wall_seconds'] / max(verified, 1):.2f} core-seconds per shop at this rate)")
    others = {k: v for k, v in r["states"].items() if k != "verified"}
    if others:
        print(f"   shops not verified: {others} (log: {r['log']})")


def compare(reports: list[dict[str, Any]]) -> None:
    rates = {r["path"]: r["states"].get("verified", 0) / r["wall_seconds"] * 60 for r in reports}
    if len(rates) < 2:
        return
    print()
    print("== paths side by side (same run, one after the other)")
    for path, rate in rates.items():
        print(f"   {path:<16} {rate:6.1f} shops/min  -> {TARGET_SHOPS / rate if rate else float('inf'):6.1f} min "
              f"for {TARGET_SHOPS:,} shops (plus phase 0)")
    if "daemon" in rates and "cli" in rates and rates["cli"]:
        print(f"   daemon / cli: {rates['daemon'] / rates['cli']:.2f}")
    if "daemon" in rates and "daemon-baseline" in rates and rates["daemon-baseline"]:
        print(f"   daemon / daemon-baseline (dagster.yaml change alone): "
              f"{rates['daemon'] / rates['daemon-baseline']:.2f}x")


def main_paths(args: Any, root: Path) -> int:
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    baseline = Path(args.baseline_yaml).resolve() if args.baseline_yaml else None
    reports = []
    for path in paths:
        print(f"-- {path}: {args.shops} shops, load {_load()}", flush=True)
        reports.append(run_path(path, args, root, baseline))
        print_path(reports[-1])
    compare(reports)
    bad = [r for r in reports if not r["check_ok"] or r["states"].get("verified", 0) != r["shops"]]
    return 1 if bad else 0
