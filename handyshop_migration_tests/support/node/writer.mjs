// A real Node.js application writer that follows the migration's routing, as the Handyshop app would.
//
// Loop: pick a random shop of SHOPS; ask `handyshop_migration.route(shop, 'write')` on the shared database;
// connect where it says (shared: the control connection; tenant: host/port/dbname/role with the password
// decrypted from password_token, one pg client cached per (shop, version)); INSERT one customer with a unique
// marker in last_name, RETURNING id, in its own transaction; append a JSON line to OUT only after COMMIT
// returned. SQLSTATE HS001 means the shop moved (or is moving): ask route() again after a few ms and retry the
// same marker, at most MAX_ATTEMPTS times. Every other error is printed and recorded, never swallowed.
//
// Environment:
//   CONTROL_URL            the shared database (postgresql://…), as the application's role
//   TENANT_ENCRYPTION_KEY  the migration's 64-hex key (opens password_token); TENANT_ENCRYPTION_OLD_KEYS optional
//   SHOPS                  comma-separated shop ids
//   OUT                    JSON-lines file, appended to
//   STOP_FILE / DURATION_MS  stop when the file appears / after so many ms (at least one of them)
//   MAX_WRITES, PAUSE_MS (default 2), MAX_ATTEMPTS (default 50), RUN_ID (marker prefix; default random)
//
// OUT lines (`kind`): write {shop, target, dbname, id, marker, version, attempts}; refused {shop, target, dbname,
// marker, version, attempt}; error {shop, target, dbname, marker, sqlstate, message}; gave_up {shop, marker,
// attempts}. The last stdout line is a JSON summary. Exit 0 only if there was no error and nothing given up;
// 1 otherwise; 2 for a bad setting (one line on stderr).

import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

import pg from "pg";

import { decryptToken, keyId } from "./crypto.mjs";

const FENCE_SQLSTATE = "HS001";
const APPLICATION_NAME = "handyshop-node-writer";
const ROUTE_SQL =
  "SELECT target, host, port, dbname, role, password_token, version::text AS version " +
  "FROM handyshop_migration.route($1, 'write')";
const INSERT_SHARED =
  "INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ($1, $2, $3, $4) RETURNING id";
const INSERT_TENANT = "INSERT INTO customers (first_name, last_name, phone) VALUES ($1, $2, $3) RETURNING id";

function settingsOrExit(env) {
  const fail = (message) => {
    process.stderr.write(`writer: ${message}\n`);
    process.exit(2);
  };
  if (!env.CONTROL_URL) fail("CONTROL_URL is not set; set it to postgresql://ROLE:PASSWORD@HOST:PORT/SHARED_DB");
  const keys = [env.TENANT_ENCRYPTION_KEY, ...(env.TENANT_ENCRYPTION_OLD_KEYS || "").split(",")]
    .map((k) => (k || "").trim())
    .filter(Boolean);
  if (keys.length === 0) fail("TENANT_ENCRYPTION_KEY is not set; set it to the migration's 64-hex key");
  try {
    keys.forEach(keyId);
  } catch (e) {
    fail(`${e.message}; check TENANT_ENCRYPTION_KEY and TENANT_ENCRYPTION_OLD_KEYS`);
  }
  const shops = (env.SHOPS || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (shops.length === 0 || !shops.every((s) => /^[0-9]+$/.test(s))) {
    fail("SHOPS must be a comma-separated list of shop ids, e.g. SHOPS=3,7");
  }
  if (!env.OUT) fail("OUT is not set; set it to the JSON-lines file the writes are recorded in");
  const number = (name, fallback) => {
    if (env[name] === undefined || env[name] === "") return fallback;
    if (!/^[0-9]+$/.test(env[name])) fail(`${name} must be a non-negative integer`);
    return Number(env[name]);
  };
  const durationMs = number("DURATION_MS", null);
  if (!env.STOP_FILE && durationMs === null) fail("set STOP_FILE (stop when it appears) or DURATION_MS");
  return {
    controlUrl: env.CONTROL_URL,
    keys,
    shops: shops.map(Number),
    out: env.OUT,
    stopFile: env.STOP_FILE || null,
    deadline: durationMs === null ? null : Date.now() + durationMs,
    maxWrites: number("MAX_WRITES", null),
    pauseMs: number("PAUSE_MS", 2),
    maxAttempts: Math.max(1, number("MAX_ATTEMPTS", 50)),
    runId: env.RUN_ID || randomBytes(4).toString("hex"),
  };
}

class Writer {
  constructor(settings) {
    this.s = settings;
    this.outFd = openSync(settings.out, "a");
    this.control = null; // {client, dbname}
    this.tenants = new Map(); // "shop:version" -> {client, dbname}
    this.counts = { writes: 0, refusals: 0, errors: 0, gave_up: 0 };
    this.seq = 0;
    this.stopping = false;
  }

  record(line) {
    // One write(2) per line, after the fact it records: a reader never sees half a line of a finished write.
    writeSync(this.outFd, `${JSON.stringify(line)}\n`);
  }

  error(context, err) {
    this.counts.errors += 1;
    const sqlstate = err && err.code ? String(err.code) : null;
    const message = String((err && err.message) || err).replace(/\s+/g, " ");
    process.stderr.write(
      `writer: error: shop ${context.shop} (${context.target ?? "?"} ${context.dbname ?? ""}) ` +
        `marker ${context.marker ?? "-"}: ${message}${sqlstate ? ` [SQLSTATE ${sqlstate}]` : ""}\n`,
    );
    this.record({ kind: "error", ...context, sqlstate, message });
  }

  watch(client, forget) {
    // An idle client whose connection dies emits 'error'; unhandled, that would kill the process.
    client.on("error", (err) => {
      forget();
      this.error({ shop: null, target: "connection", dbname: null, marker: null }, err);
    });
  }

  async controlConnection() {
    if (this.control) return this.control;
    const client = new pg.Client({
      connectionString: this.s.controlUrl,
      application_name: APPLICATION_NAME,
      connectionTimeoutMillis: 10000,
    });
    const entry = { client, dbname: null };
    this.watch(client, () => {
      if (this.control === entry) this.control = null;
    });
    await client.connect();
    entry.dbname = (await client.query("SELECT current_database() AS db")).rows[0].db;
    this.control = entry;
    return entry;
  }

  async tenantConnection(shop, route) {
    const cacheKey = `${shop}:${route.version}`;
    const hit = this.tenants.get(cacheKey);
    if (hit) return hit;
    this.dropShop(shop);
    const client = new pg.Client({
      host: route.host,
      port: route.port,
      database: route.dbname,
      user: route.role,
      password: decryptToken(route.password_token, this.s.keys, shop),
      application_name: APPLICATION_NAME,
      connectionTimeoutMillis: 10000,
    });
    const entry = { client, dbname: route.dbname };
    this.watch(client, () => {
      if (this.tenants.get(cacheKey) === entry) this.tenants.delete(cacheKey);
    });
    await client.connect();
    this.tenants.set(cacheKey, entry);
    return entry;
  }

  dropShop(shop) {
    // The shop's routing changed: its connections of other versions point to where it no longer lives.
    for (const [key, old] of this.tenants) {
      if (key.startsWith(`${shop}:`)) {
        this.tenants.delete(key);
        old.client.end().catch(() => {});
      }
    }
  }

  forget(entry) {
    if (this.control === entry) this.control = null;
    for (const [key, e] of this.tenants) if (e === entry) this.tenants.delete(key);
    entry.client.end().catch(() => {});
  }

  async route(shop) {
    const control = await this.controlConnection();
    const result = await control.client.query(ROUTE_SQL, [shop]);
    if (result.rows.length !== 1) {
      throw new Error(`route(${shop}, 'write') returned ${result.rows.length} rows instead of one`);
    }
    const row = result.rows[0];
    if (row.target !== "shared" && row.target !== "tenant") {
      throw new Error(`route(${shop}, 'write') returned target ${JSON.stringify(row.target)}`);
    }
    return row;
  }

  async insert(entry, target, shop, marker) {
    const { client } = entry;
    await client.query("BEGIN");
    try {
      const values = ["Node", marker, "+43 660 0000000"];
      const result =
        target === "shared"
          ? await client.query(INSERT_SHARED, [...values, shop])
          : await client.query(INSERT_TENANT, values);
      await client.query("COMMIT");
      return result.rows[0].id;
    } catch (err) {
      try {
        await client.query("ROLLBACK");
      } catch {
        this.forget(entry); // the connection is gone; `err` below says why
      }
      if (!err.code) this.forget(entry); // not a server error: a broken connection is not reused
      throw err;
    }
  }

  async writeOne(shop) {
    this.seq += 1;
    const marker = `node-${this.s.runId}-${this.seq}`;
    for (let attempt = 1; attempt <= this.s.maxAttempts; attempt += 1) {
      const context = { shop, target: null, dbname: null, marker };
      let route;
      try {
        route = await this.route(shop);
      } catch (err) {
        if (this.control && !err.code) this.forget(this.control); // a lost connection is not reused
        this.error(context, err);
        return;
      }
      context.target = route.target;
      let entry;
      try {
        if (route.target === "shared") {
          this.dropShop(shop);
          entry = await this.controlConnection();
        } else {
          context.dbname = route.dbname;
          entry = await this.tenantConnection(shop, route);
        }
        context.dbname = entry.dbname;
      } catch (err) {
        this.error(context, err);
        return;
      }
      try {
        const id = await this.insert(entry, route.target, shop, marker);
        this.counts.writes += 1;
        this.record({ kind: "write", ...context, id: Number(id), version: route.version, attempts: attempt });
        return;
      } catch (err) {
        if (err.code !== FENCE_SQLSTATE) {
          this.error(context, err);
          return;
        }
        this.counts.refusals += 1;
        this.record({ kind: "refused", ...context, version: route.version, attempt });
        await sleep(Math.min(5 * 2 ** attempt, 200));
      }
    }
    this.counts.gave_up += 1;
    process.stderr.write(`writer: gave up: shop ${shop} marker ${marker} refused ${this.s.maxAttempts} times\n`);
    this.record({ kind: "gave_up", shop, marker, attempts: this.s.maxAttempts });
  }

  done() {
    if (this.stopping) return true;
    if (this.s.stopFile && existsSync(this.s.stopFile)) return true;
    if (this.s.deadline !== null && Date.now() >= this.s.deadline) return true;
    return this.s.maxWrites !== null && this.counts.writes >= this.s.maxWrites;
  }

  async run() {
    while (!this.done()) {
      const shop = this.s.shops[Math.floor(Math.random() * this.s.shops.length)];
      await this.writeOne(shop);
      if (this.s.pauseMs > 0) await sleep(this.s.pauseMs);
    }
    const clients = [this.control, ...this.tenants.values()].filter(Boolean);
    await Promise.allSettled(clients.map((e) => e.client.end()));
    closeSync(this.outFd);
    process.stdout.write(`${JSON.stringify({ run_id: this.s.runId, ...this.counts })}\n`);
    return this.counts.errors === 0 && this.counts.gave_up === 0 ? 0 : 1;
  }
}

const writer = new Writer(settingsOrExit(process.env));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    writer.stopping = true; // finish the write under way, record it, then stop
  });
}
process.exitCode = await writer.run();
