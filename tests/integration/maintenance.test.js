'use strict';
// @mongo-mode
// Zombie cleanup and the admin maintenance routes of presence-gateway (SPEC §1 "idle but
// connected is not a zombie", §2 flow 4, §3 maintenance stats and cleanup-zombies), end to end:
// the real binary, the official socket.io-client (transports: ['websocket']).
//
// A zombie is made the way a crashed peer node would leave one: a person marked online in the
// store with an old lastActiveAt and no connection here, written with the sqlite3 CLI into the
// gateway's own database file while it runs (WAL lets a second writer in). Tests that need the
// CLI skip themselves in MongoDB mode (PG_TEST_MONGO_URI set): there is no SQLite file then.
//
// "Nothing arrives" is never checked by sleeping: broadcasts to one connection keep their
// order, so after the event under test a later one is published (a fresh user comes online in
// a conversation shared with the watcher) and awaited; whatever had to arrive has arrived then.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { io } = require('socket.io-client');
const {
  startGateway, userToken, adminToken, createUser, createConversation, createAnonymous, withTimeout, waitUntil,
} = require('./helpers');

const MONGO = Boolean(process.env.PG_TEST_MONGO_URI);
const NO_SQLITE = MONGO ? 'the zombie is written with the sqlite3 CLI; MongoDB mode has no SQLite file' : false;
const T = { timeout: 30000 };
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
let seq = 0;
const uname = (p) => `${p}${process.pid}m${++seq}`;

// ---- sqlite3 CLI on the running gateway's database ----------------------------------------
function dbFile(gw) {
  assert.match(gw.databaseUrl, /^sqlite:/);
  return gw.databaseUrl.slice('sqlite:'.length);
}

function sql(gw, statement) {
  return execFileSync('sqlite3', ['-cmd', '.timeout 5000', dbFile(gw), statement], { encoding: 'utf8', timeout: 10000 }).trim();
}

// Marks a person online in the store with lastActiveAt agoMs in the past (null: never active),
// as a dead node would leave it.
function makeZombie(gw, id, agoMs = 600000, table = 'users') {
  const at = agoMs === null ? null : Date.now() - agoMs;
  // changes() in the same session: a second query could already see the cleanup's write.
  const n = sql(gw, `UPDATE ${table} SET isOnline = 1, lastActiveAt = ${at === null ? 'NULL' : at}, lastSeen = NULL WHERE id = '${id}'; SELECT changes();`);
  assert.equal(n, '1', `no ${table} row ${id}`);
  return at;
}

function row(gw, id, table = 'users') {
  const out = sql(gw, `SELECT isOnline, coalesce(lastActiveAt, ''), coalesce(lastSeen, '') FROM ${table} WHERE id = '${id}'`);
  const [isOnline, lastActiveAt, lastSeen] = out.split('|');
  return { isOnline: Number(isOnline), lastActiveAt: lastActiveAt ? Number(lastActiveAt) : null, lastSeen: lastSeen ? Number(lastSeen) : null };
}

// ---- socket.io-client ---------------------------------------------------------------------
function connect(gw, u) {
  const s = io(gw.url, {
    transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000, auth: { token: userToken(u.id) },
  });
  s.userId = u.id;
  s.statuses = [];
  s.waiters = [];
  s.on('user:status', (ev) => {
    s.statuses.push({ ...ev, receivedAt: Date.now() });
    for (const w of s.waiters.slice()) w();
  });
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (err) => reject(err));
  }), 5000, 'socket.io connect');
}

function waitStatus(s, pred, what, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    const check = () => {
      const ev = s.statuses.find(pred);
      if (ev) { s.waiters = s.waiters.filter((w) => w !== check); resolve(ev); return true; }
      return false;
    };
    if (!check()) s.waiters.push(check);
  }), ms, what);
}

// Publishes a later broadcast to every watcher and waits until each has it (see the top).
async function barrier(gw, watchers) {
  const h = await createUser(gw, uname('barrier'));
  await createConversation(gw, [h.id, ...watchers.map((w) => w.userId)]);
  const hs = await connect(gw, h);
  for (const w of watchers) await waitStatus(w, (e) => e.userId === h.id && e.isOnline, 'barrier event');
  hs.close();
  for (const w of watchers) await waitStatus(w, (e) => e.userId === h.id && !e.isOnline, 'barrier offline');
}

async function stats(gw) {
  const r = await gw.api('GET', '/api/admin/maintenance/stats', { token: adminToken() });
  assert.equal(r.status, 200, r.text);
  return r.body;
}

// Waits until the maintenance thread has finished n more runs after the call.
async function runsPass(gw, n, intervalMs) {
  const seen = new Set();
  const first = (await stats(gw)).lastRunAt;
  await waitUntil(async () => {
    const s = await stats(gw);
    if (s.lastRunAt !== null && s.lastRunAt !== first) seen.add(s.lastRunAt);
    return seen.size >= n;
  }, { timeoutMs: intervalMs * n * 4 + 3000, intervalMs: Math.max(10, intervalMs / 4), what: `${n} maintenance runs` });
}

async function stopClean(gw, tokens = []) {
  if (!gw) return;
  if (gw.exitCode === null && gw.signal === null) await gw.stop();
  assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/, 'sanitizer report');
  for (const t of tokens) assert.ok(!gw.log.includes(t), 'a token appeared in the log');
  assert.doesNotMatch(gw.log, /eyJ[\w-]+\.eyJ[\w-]+/, 'a JWT appeared in the log');
}

describe('maintenance: zombie cleanup thread', () => {
  const INTERVAL = 200;
  const env = { MAINTENANCE_INTERVAL_MS: String(INTERVAL), OFFLINE_THRESHOLD_MS: '400' };

  test('a zombie is cleaned within one interval and its peers get isOnline:false with lastSeen', { ...T, skip: NO_SQLITE }, async () => {
    const gw = await startGateway({ env });
    try {
      const z = await createUser(gw, uname('zombie'));
      const w = await createUser(gw, uname('watcher'));
      const other = await createUser(gw, uname('stranger'));
      await createConversation(gw, [z.id, w.id]);
      await createConversation(gw, [other.id]);
      const sw = await connect(gw, w);
      const so = await connect(gw, other);
      const before = await stats(gw);

      const t0 = Date.now();
      const activeAt = makeZombie(gw, z.id);
      const ev = await waitStatus(sw, (e) => e.userId === z.id && !e.isOnline, 'zombie offline event', 3000);
      const elapsed = ev.receivedAt - t0;
      // One interval, plus the run itself and the delivery (an ASan build is slower).
      assert.ok(elapsed <= INTERVAL + 300, `cleaned after ${elapsed} ms, interval ${INTERVAL} ms`);
      assert.equal(ev.username, z.username);
      assert.equal(ev.isAnonymous, false);
      assert.match(ev.lastSeen, ISO);
      const seen = Date.parse(ev.lastSeen);
      assert.ok(seen >= t0 - 50 && seen <= ev.receivedAt + 50, `lastSeen ${ev.lastSeen} is the cleanup time`);
      assert.equal(ev.lastActiveAt, new Date(activeAt).toISOString(), 'lastActiveAt is the stored one');
      // Offline for 10 minutes since its last activity: away (SPEC §1), not online.
      assert.equal(ev.status, 'away');

      // Exactly one event, and none to a connection sharing no conversation with it.
      await barrier(gw, [sw, so]);
      assert.equal(sw.statuses.filter((e) => e.userId === z.id).length, 1);
      assert.equal(so.statuses.filter((e) => e.userId === z.id).length, 0);

      // The store agrees (the writer lands within a second), and REST too.
      await waitUntil(() => row(gw, z.id).isOnline === 0, { timeoutMs: 2000, what: 'offline row' });
      const r = row(gw, z.id);
      assert.equal(r.lastSeen, seen);
      assert.equal(r.lastActiveAt, activeAt);
      const v = await gw.api('GET', `/api/users/${z.id}`, { token: userToken(w.id) });
      assert.equal(v.status, 200);
      assert.equal(v.body.isOnline, false);
      assert.equal(v.body.lastSeen, ev.lastSeen);

      const after = await stats(gw);
      assert.equal(after.zombiesCleanedTotal - before.zombiesCleanedTotal, 1);
      await waitUntil(() => /\[CLEANUP\] cleaned 1 zombies/.test(gw.log), { what: 'a [CLEANUP] line counting the zombie' });
      sw.close();
      so.close();
    } finally {
      await stopClean(gw);
    }
  });

  test('a connected but idle person is never cleaned', T, async () => {
    const gw = await startGateway({ env });
    try {
      const idle = await createUser(gw, uname('idle'));
      const w = await createUser(gw, uname('idlewatch'));
      await createConversation(gw, [idle.id, w.id]);
      const sw = await connect(gw, w);
      const si = await connect(gw, idle);
      await waitStatus(sw, (e) => e.userId === idle.id && e.isOnline, 'idle online');
      if (!MONGO) {
        // Age its lastActiveAt far past the threshold once the connect write has landed.
        await waitUntil(() => row(gw, idle.id).isOnline === 1, { timeoutMs: 2000, what: 'connect write' });
        makeZombie(gw, idle.id, 3600000);
      } else {
        // Without the CLI: stay silent longer than the threshold (400 ms) instead.
        await runsPass(gw, 3, INTERVAL);
      }
      await runsPass(gw, 4, INTERVAL);
      assert.ok(si.connected, 'the idle connection is still open');
      await barrier(gw, [sw]);
      assert.deepEqual(sw.statuses.filter((e) => e.userId === idle.id).map((e) => e.isOnline), [true]);
      const s = await stats(gw);
      assert.equal(s.zombiesCleanedTotal, 0);
      assert.equal(s.zombiesCleanedLastRun, 0);
      const now = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() });
      assert.equal(now.status, 200);
      assert.deepEqual(now.body, { cleaned: [], count: 0 });
      const v = await gw.api('GET', `/api/users/${idle.id}`, { token: userToken(w.id) });
      assert.equal(v.body.isOnline, true);
      if (!MONGO) assert.equal(row(gw, idle.id).isOnline, 1);
      si.close();
      sw.close();
    } finally {
      await stopClean(gw);
    }
  });
});

describe('maintenance: zombies left by a dead node, concurrent runs', () => {
  test('a node dies with persons online: the surviving node cleans them and tells its clients', T, async () => {
    // Two gateways on one database. The survivor starts first and the doomed one second, so
    // no startup reconciliation runs over persons connected to the other. The doomed node
    // never runs a cleanup (it would take the survivor's idle clients for its zombies: a
    // node only knows its own connections), and the threshold is long enough for the doomed
    // node's clients to stay fresh until it dies, for the same reason.
    const THRESHOLD = 3000;
    let doomed;
    const survivor = await startGateway({ env: { MAINTENANCE_INTERVAL_MS: '200', OFFLINE_THRESHOLD_MS: String(THRESHOLD) } });
    try {
      doomed = await startGateway({ databaseUrl: survivor.databaseUrl, env: { MAINTENANCE_INTERVAL_MS: '3600000' } });
      const z1 = await createUser(survivor, uname('dead1'));
      const z2 = await createUser(survivor, uname('dead2'));
      const w = await createUser(survivor, uname('survwatch'));
      await createConversation(survivor, [z1.id, z2.id, w.id]);
      const tConnect = Date.now();
      const s1 = await connect(doomed, z1);
      const s2 = await connect(doomed, z2);
      await waitStatus(s1, (e) => e.userId === z2.id && e.isOnline, 'z2 online on the doomed node');
      const sw = await connect(survivor, w);
      // The connect writes of z1 and z2 must be in the store before the node dies.
      await waitUntil(async () => {
        const r = await survivor.api('GET', `/api/users/status?ids=${z1.id},${z2.id}`, { token: userToken(w.id) });
        return r.body.users.every((u) => u.isOnline);
      }, { timeoutMs: 3000, what: 'z1 and z2 online in the store' });
      const before = await stats(survivor);
      assert.equal(before.zombiesCleanedTotal, 0);
      assert.ok(Date.now() - tConnect < THRESHOLD - 500, 'setup too slow for the threshold');
      const r = await doomed.stop('SIGKILL');
      assert.equal(r.signal, 'SIGKILL');
      const t0 = Date.now();
      const e1 = await waitStatus(sw, (e) => e.userId === z1.id && !e.isOnline, 'z1 offline', THRESHOLD + 3000);
      const e2 = await waitStatus(sw, (e) => e.userId === z2.id && !e.isOnline, 'z2 offline', THRESHOLD + 3000);
      for (const e of [e1, e2]) {
        assert.match(e.lastSeen, ISO);
        assert.ok(Date.parse(e.lastSeen) >= t0, 'lastSeen is the cleanup time, after the death');
        assert.match(e.lastActiveAt, ISO);
        // Cleaned once idle for the threshold, within one interval (+ the run and delivery).
        const idle = e.receivedAt - Date.parse(e.lastActiveAt);
        assert.ok(idle >= THRESHOLD && idle <= THRESHOLD + 200 + 400, `cleaned after ${idle} ms idle`);
      }
      const after = await stats(survivor);
      assert.equal(after.zombiesCleanedTotal - before.zombiesCleanedTotal, 2);
      assert.ok(sw.connected, 'the survivor\'s own client stays');
      const v = await survivor.api('GET', `/api/users/status?ids=${z1.id},${z2.id},${w.id}`, { token: userToken(w.id) });
      const by = Object.fromEntries(v.body.users.map((u) => [u.id, u]));
      assert.equal(by[z1.id].isOnline, false);
      assert.equal(by[z2.id].isOnline, false);
      assert.equal(by[w.id].isOnline, true);
      assert.equal(by[z1.id].lastSeen, e1.lastSeen);
      sw.close();
    } finally {
      if (doomed && doomed.exitCode === null && doomed.signal === null) await doomed.stop('SIGKILL');
      await stopClean(survivor);
    }
  });

  test('cleanup-zombies called concurrently with the thread: each zombie cleaned and told once', { ...T, skip: NO_SQLITE }, async () => {
    const gw = await startGateway({ env: { MAINTENANCE_INTERVAL_MS: '10', OFFLINE_THRESHOLD_MS: '400' } });
    try {
      const w = await createUser(gw, uname('cwatch'));
      const zs = [];
      for (let i = 0; i < 12; i++) zs.push(await createUser(gw, uname('cz')));
      await createConversation(gw, [w.id, ...zs.map((z) => z.id)]);
      const sw = await connect(gw, w);
      const before = await stats(gw);
      // All at once in one statement, then five admin runs racing the 10 ms thread.
      sql(gw, `UPDATE users SET isOnline = 1, lastActiveAt = ${Date.now() - 600000} WHERE id IN (${zs.map((z) => `'${z.id}'`).join(',')})`);
      const results = await Promise.all([0, 1, 2, 3, 4].map(() => gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() })));
      for (const z of zs) await waitStatus(sw, (e) => e.userId === z.id && !e.isOnline, 'zombie offline', 5000);
      await barrier(gw, [sw]);
      for (const z of zs) assert.equal(sw.statuses.filter((e) => e.userId === z.id).length, 1, 'one event per zombie');
      const viaRoute = results.flatMap((r) => r.body.cleaned);
      assert.equal(new Set(viaRoute).size, viaRoute.length, 'no zombie reported by two runs');
      const after = await stats(gw);
      assert.equal(after.zombiesCleanedTotal - before.zombiesCleanedTotal, zs.length);
      sw.close();
    } finally {
      await stopClean(gw);
    }
  });
});

describe('maintenance: anonymous, never-active and grace', () => {
  const INTERVAL = 200;

  test('an anonymous zombie and a never-active zombie are cleaned; stats count them', { ...T, skip: NO_SQLITE }, async () => {
    const gw = await startGateway({ env: { MAINTENANCE_INTERVAL_MS: String(INTERVAL), OFFLINE_THRESHOLD_MS: '400' } });
    try {
      const w = await createUser(gw, uname('anonwatch'));
      const never = await createUser(gw, uname('never'));
      const conv = await createConversation(gw, [w.id, never.id]);
      const anon = await createAnonymous(gw, conv.id, uname('ghost'));
      const sw = await connect(gw, w);
      const before = await stats(gw);
      const t0 = Date.now();
      makeZombie(gw, anon.id, 600000, 'anonymous_participants');
      makeZombie(gw, never.id, null);
      const ea = await waitStatus(sw, (e) => e.userId === anon.id && !e.isOnline, 'anonymous zombie offline', 3000);
      const en = await waitStatus(sw, (e) => e.userId === never.id && !e.isOnline, 'never-active zombie offline', 3000);
      assert.equal(ea.isAnonymous, true);
      assert.equal(ea.username, anon.username);
      assert.match(ea.lastSeen, ISO);
      assert.equal(en.isAnonymous, false);
      assert.equal(en.lastActiveAt, null);
      assert.equal(en.status, 'offline', 'never active is offline');
      assert.ok(Date.parse(en.lastSeen) >= t0 - 50, 'lastSeen is the cleanup time');
      await waitUntil(() => row(gw, anon.id, 'anonymous_participants').isOnline === 0 && row(gw, never.id).isOnline === 0,
        { timeoutMs: 2000, what: 'rows offline' });
      assert.equal(row(gw, anon.id, 'anonymous_participants').lastSeen, Date.parse(ea.lastSeen));
      assert.equal(row(gw, never.id).lastActiveAt, null);
      const after = await stats(gw);
      assert.equal(after.zombiesCleanedTotal - before.zombiesCleanedTotal, 2);
      assert.equal(after.onlineAnonymous, 0);
      assert.equal(after.onlineUsers, 1);
      sw.close();
    } finally {
      await stopClean(gw);
    }
  });

  test('a person inside its disconnect grace is left alone; one offline event when the grace ends', { ...T, skip: NO_SQLITE }, async () => {
    const GRACE = 1500;
    const gw = await startGateway({
      env: { MAINTENANCE_INTERVAL_MS: String(INTERVAL), OFFLINE_THRESHOLD_MS: '400', DISCONNECT_GRACE_MS: String(GRACE) },
    });
    try {
      const a = await createUser(gw, uname('graced'));
      const w = await createUser(gw, uname('gracewatch'));
      await createConversation(gw, [a.id, w.id]);
      const sw = await connect(gw, w);
      const sa = await connect(gw, a);
      await waitStatus(sw, (e) => e.userId === a.id && e.isOnline, 'a online');
      await waitUntil(() => row(gw, a.id).isOnline === 1, { timeoutMs: 2000, what: 'connect write' });
      makeZombie(gw, a.id, 3600000);
      const t0 = Date.now();
      sa.close();
      // Runs inside the grace must not take it (the engine counts it as live).
      await runsPass(gw, 3, INTERVAL);
      assert.ok(Date.now() - t0 < GRACE, 'the runs ended inside the grace (slow machine?)');
      assert.equal(sw.statuses.filter((e) => e.userId === a.id && !e.isOnline).length, 0, 'offline inside the grace');
      assert.equal((await stats(gw)).zombiesCleanedTotal, 0);
      const off = await waitStatus(sw, (e) => e.userId === a.id && !e.isOnline, 'offline after the grace', GRACE + 3000);
      assert.ok(off.receivedAt - t0 >= GRACE - 50, 'offline came before the grace ended');
      // Later runs find it offline in the store: no second event, nothing cleaned.
      await runsPass(gw, 3, INTERVAL);
      await barrier(gw, [sw]);
      assert.deepEqual(sw.statuses.filter((e) => e.userId === a.id).map((e) => e.isOnline), [true, false]);
      assert.equal((await stats(gw)).zombiesCleanedTotal, 0);
      sw.close();
    } finally {
      await stopClean(gw);
    }
  });
});

describe('maintenance: admin routes', () => {
  // The thread never runs on its own here: every cleanup is the one the test asks for.
  const env = { MAINTENANCE_INTERVAL_MS: '3600000', OFFLINE_THRESHOLD_MS: '400' };

  test('cleanup-zombies: 401 without a token, 403 for a user, 200 {cleaned, count} for an admin', T, async () => {
    const gw = await startGateway({ env });
    const tokens = [];
    try {
      const u = await createUser(gw, uname('plain'));
      const ut = userToken(u.id);
      const at = adminToken();
      tokens.push(ut, at);
      for (const [method, p] of [['POST', '/api/admin/maintenance/cleanup-zombies'], ['GET', '/api/admin/maintenance/stats']]) {
        const none = await gw.api(method, p);
        assert.equal(none.status, 401, `${method} ${p} without a token`);
        assert.equal(typeof none.body.error, 'string');
        const user = await gw.api(method, p, { token: ut });
        assert.equal(user.status, 403, `${method} ${p} as a user`);
        assert.equal(typeof user.body.error, 'string');
      }
      const r = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: at });
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, { cleaned: [], count: 0 });
      // The BIGBOSS role is an admin too.
      const bb = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: userToken('0000000000000000000000bb', { role: 'BIGBOSS' }) });
      assert.equal(bb.status, 200);
    } finally {
      await stopClean(gw, tokens);
    }
  });

  test('cleanup-zombies returns the ids cleaned and stats match what happened', { ...T, skip: NO_SQLITE }, async () => {
    const gw = await startGateway({ env });
    try {
      const s0 = await stats(gw);
      assert.equal(s0.maintenanceActive, true);
      assert.equal(s0.intervalMs, 3600000);
      assert.equal(s0.offlineThresholdMs, 400);
      assert.equal(s0.lastRunAt, null);
      assert.equal(s0.zombiesCleanedTotal, 0);
      assert.equal(s0.zombiesCleanedLastRun, 0);
      assert.equal(s0.onlineUsers, 0);
      assert.equal(s0.onlineAnonymous, 0);
      assert.equal(s0.liveConnections, 0);
      assert.equal(s0.broadcastsTotal, 0);

      const z1 = await createUser(gw, uname('z1'));
      const z2 = await createUser(gw, uname('z2'));
      const fresh = await createUser(gw, uname('fresh')); // online, recently active: not a zombie yet
      const w = await createUser(gw, uname('w'));
      await createConversation(gw, [z1.id, z2.id, fresh.id, w.id]);
      const sw1 = await connect(gw, w);
      const sw2 = await connect(gw, w); // a second tab: one more connection, not one more user
      const s1 = await stats(gw);
      assert.equal(s1.onlineUsers, 1);
      assert.equal(s1.liveConnections, 2);
      assert.equal(s1.broadcastsTotal, 1, 'one status change: w came online');

      makeZombie(gw, z1.id);
      makeZombie(gw, z2.id, 2000);
      makeZombie(gw, fresh.id, 0);
      const t0 = Date.now();
      const r = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() });
      const t1 = Date.now();
      assert.equal(r.status, 200);
      assert.equal(r.body.count, 2);
      assert.deepEqual([...r.body.cleaned].sort(), [z1.id, z2.id].sort());
      for (const s of [sw1, sw2]) {
        for (const z of [z1, z2]) await waitStatus(s, (e) => e.userId === z.id && !e.isOnline, 'zombie offline on each tab');
      }
      const s2 = await stats(gw);
      assert.equal(s2.zombiesCleanedLastRun, 2);
      assert.equal(s2.zombiesCleanedTotal, 2);
      assert.match(s2.lastRunAt, ISO);
      const last = Date.parse(s2.lastRunAt);
      assert.ok(last >= t0 - 5 && last <= t1 + 5, `lastRunAt ${s2.lastRunAt} within the request`);
      assert.ok(Number.isInteger(s2.lastRunDurationMs) && s2.lastRunDurationMs >= 0 && s2.lastRunDurationMs <= t1 - t0 + 5);
      assert.equal(s2.broadcastsTotal, 3, 'w online, then one per zombie');
      assert.equal(s2.onlineUsers, 1, 'the registry counts live persons, not the store rows');
      assert.equal(s2.liveConnections, 2);

      // The fresh one becomes a zombie once the threshold passes; a second run takes it only.
      await waitUntil(() => Date.now() - t0 > 450, { timeoutMs: 2000, what: 'threshold' });
      const r2 = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() });
      assert.deepEqual(r2.body, { cleaned: [fresh.id], count: 1 });
      const r3 = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() });
      assert.deepEqual(r3.body, { cleaned: [], count: 0 });
      const s3 = await stats(gw);
      assert.equal(s3.zombiesCleanedLastRun, 0);
      assert.equal(s3.zombiesCleanedTotal, 3);
      assert.equal(s3.broadcastsTotal, 4);

      sw1.close();
      sw2.close();
      const s4 = await waitUntil(async () => {
        const s = await stats(gw);
        return s.liveConnections === 0 ? s : null;
      }, { what: 'connections gone' });
      assert.equal(s4.onlineUsers, 0);
      assert.equal(s4.broadcastsTotal, 5, 'w offline');
      assert.equal((gw.log.match(/\[CLEANUP\] cleaned/g) || []).length, 3, 'one [CLEANUP] line per run');
    } finally {
      await stopClean(gw);
    }
  });
});
