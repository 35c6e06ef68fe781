'use strict';
// @mongo-mode
// GET /metrics and the log lines of presence-gateway (SPEC §3 "Metrics and logs"), end to end:
// the exposition passes `promtool check metrics`, the labelled series exist at 0 from the
// start, and every counter and gauge moves by exactly what the test did (connects, a REST
// call inside and outside the throttle window, a client event, a disconnect, a zombie). The
// log has the [CONNECT], [DISCONNECT] and [CLEANUP] info lines and the debug-level
// "Broadcast USER_STATUS", and never a token.
//
// The zombie step writes the gateway's SQLite file with the sqlite3 CLI, so it is left out in
// MongoDB mode (PG_TEST_MONGO_URI set); the rest runs on both stores.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const { io } = require('socket.io-client');
const {
  startGateway, userToken, adminToken, createUser, createConversation, createAnonymous, withTimeout, waitUntil,
} = require('./helpers');

const MONGO = Boolean(process.env.PG_TEST_MONGO_URI);
const T = { timeout: 40000 };
let seq = 0;
const uname = (p) => `${p}${process.pid}q${++seq}`;
const HAVE_PROMTOOL = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

async function scrape(gw) {
  const r = await fetch(`${gw.url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return r.text();
}

// name{labels} → value for every sample of the exposition.
function parse(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/);
    assert.ok(m, `malformed sample line: ${line}`);
    out[m[1]] = Number(m[2]);
  }
  return out;
}

function promtool(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 0, `promtool check metrics:\n${r.stdout}${r.stderr}`);
  assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'promtool has remarks');
}

const WATCHED = [
  'meeshy_user_status_broadcasts_total', 'meeshy_user_status_deliveries_total', 'meeshy_connected_sockets',
  'meeshy_online_users', 'meeshy_online_anonymous', 'meeshy_zombies_cleaned_total',
  'meeshy_activity_updates_total{result="written"}', 'meeshy_activity_updates_total{result="throttled"}',
  'meeshy_db_updates_total', 'meeshy_status_broadcast_latency_seconds_count',
];

// Snapshot of the watched series.
async function snap(gw) {
  const all = parse(await scrape(gw));
  const s = {};
  for (const k of WATCHED) {
    assert.ok(k in all, `series ${k} missing`);
    s[k] = all[k];
  }
  return s;
}

// meeshy_activity_updates_total{result="written"} → activity_updates_written, and so on.
const short = (k) => k.replace(/^meeshy_/, '').replace(/_total/, '').replace(/\{result="(\w+)"\}/, '_$1');

// Waits until every watched series equals base + delta (delta 0 where unnamed), then checks it
// stays so on one more scrape: a counter that moved too far fails at once.
async function expectDelta(gw, base, delta, what) {
  const want = {};
  for (const k of WATCHED) want[k] = base[k] + (delta[short(k)] || 0);
  let last;
  try {
    await waitUntil(async () => {
      last = await snap(gw);
      return WATCHED.every((k) => last[k] === want[k]);
    }, { timeoutMs: 3000, intervalMs: 20, what });
  } catch (e) {
    const diff = WATCHED.filter((k) => last[k] !== want[k]).map((k) => `${k}: ${last[k]} (want ${want[k]})`);
    throw new Error(`${what}: ${diff.join(', ')}`);
  }
  return last;
}

function connect(gw, auth) {
  const s = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000, auth });
  s.statuses = [];
  s.on('user:status', (ev) => s.statuses.push(ev));
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (err) => reject(err));
  }), 5000, 'socket.io connect');
}

function disconnected(s) {
  return withTimeout(new Promise((resolve) => s.once('disconnect', resolve)), 5000, 'disconnect');
}

function emitAck(s, ...args) {
  return withTimeout(new Promise((resolve) => s.emit(...args, (...res) => resolve(res))), 5000, `ack of ${args[0]}`);
}

describe('metrics', () => {
  test('promtool accepts /metrics; labelled series at 0 from the start; counters move as the flows say', { ...T, skip: HAVE_PROMTOOL ? false : 'promtool not installed' }, async () => {
    const gw = await startGateway({ env: { MAINTENANCE_INTERVAL_MS: '3600000', OFFLINE_THRESHOLD_MS: '400' } });
    try {
      const first = await scrape(gw);
      promtool(first);
      for (const name of ['meeshy_user_status_broadcasts_total', 'meeshy_zombies_cleaned_total', 'meeshy_activity_updates_total', 'meeshy_db_updates_total', 'meeshy_user_status_deliveries_total']) {
        assert.match(first, new RegExp(`^# TYPE ${name} counter$`, 'm'));
      }
      for (const name of ['meeshy_online_users', 'meeshy_connected_sockets', 'meeshy_online_anonymous']) {
        assert.match(first, new RegExp(`^# TYPE ${name} gauge$`, 'm'));
      }
      assert.match(first, /^# TYPE meeshy_status_broadcast_latency_seconds histogram$/m);
      const s0 = await snap(gw);
      for (const k of WATCHED) assert.equal(s0[k], 0, `${k} at start`);

      const a = await createUser(gw, uname('ma'));
      const b = await createUser(gw, uname('mb'));
      const c = await createUser(gw, uname('mc'));
      const conv = await createConversation(gw, [a.id, b.id]);
      // Provisioning is not presence: nothing moves.
      let base = await expectDelta(gw, s0, {}, 'after provisioning');

      // b connects: one status change, nobody to deliver to, one activity write, one row.
      const sb = await connect(gw, { token: userToken(b.id) });
      base = await expectDelta(gw, base, {
        user_status_broadcasts: 1, connected_sockets: 1, online_users: 1, activity_updates_written: 1,
        db_updates: 1, status_broadcast_latency_seconds_count: 1,
      }, 'b connected');

      // a connects: delivered to b once.
      const sa = await connect(gw, { token: userToken(a.id) });
      base = await expectDelta(gw, base, {
        user_status_broadcasts: 1, user_status_deliveries: 1, connected_sockets: 1, online_users: 1,
        activity_updates_written: 1, db_updates: 1, status_broadcast_latency_seconds_count: 1,
      }, 'a connected');
      assert.ok(sb.statuses.some((e) => e.userId === a.id && e.isOnline));

      // A second tab of a: one more socket, no status change and no store write (SPEC §2 flow
      // 1 writes on the first live connection only).
      const sa2 = await connect(gw, { token: userToken(a.id) });
      base = await expectDelta(gw, base, { connected_sockets: 1 }, 'a second tab');

      // REST by a (inside the window opened by the connect) is throttled; by c it is written.
      assert.equal((await gw.api('GET', '/api/users/me', { token: userToken(a.id) })).status, 200);
      assert.equal((await gw.api('GET', '/api/users/me', { token: userToken(c.id) })).status, 200);
      assert.equal((await gw.api('GET', '/api/users/me', { token: userToken(c.id) })).status, 200);
      base = await expectDelta(gw, base, { activity_updates_throttled: 2, activity_updates_written: 1, db_updates: 1 }, 'REST activity');

      // A client event counts as activity (throttled here).
      const ack = await emitAck(sa, 'conversation:join', { conversationId: conv.id });
      assert.equal(ack[0].success, true);
      base = await expectDelta(gw, base, { activity_updates_throttled: 1 }, 'client event');

      // An anonymous participant is counted apart from users.
      const anon = await createAnonymous(gw, conv.id, uname('anon'));
      const sn = await connect(gw, { sessionToken: anon.sessionToken });
      base = await expectDelta(gw, base, {
        user_status_broadcasts: 1, user_status_deliveries: 3, connected_sockets: 1, online_anonymous: 1,
        activity_updates_written: 1, db_updates: 1, status_broadcast_latency_seconds_count: 1,
      }, 'anonymous connected');
      const goneN = disconnected(sn);
      sn.close();
      await goneN;
      base = await expectDelta(gw, base, {
        user_status_broadcasts: 1, user_status_deliveries: 3, connected_sockets: -1, online_anonymous: -1,
        db_updates: 1, status_broadcast_latency_seconds_count: 1,
      }, 'anonymous gone');

      // a closes one tab (no change), then the last: offline, delivered to b.
      sa2.close();
      base = await expectDelta(gw, base, { connected_sockets: -1 }, 'one tab closed');
      sa.close();
      base = await expectDelta(gw, base, {
        user_status_broadcasts: 1, user_status_deliveries: 1, connected_sockets: -1, online_users: -1,
        db_updates: 1, status_broadcast_latency_seconds_count: 1,
      }, 'a offline');

      if (!MONGO) {
        // A zombie (online in the store, old lastActiveAt, no connection) is cleaned on demand.
        const file = gw.databaseUrl.slice('sqlite:'.length);
        execFileSync('sqlite3', ['-cmd', '.timeout 5000', file,
          `UPDATE users SET isOnline = 1, lastActiveAt = ${Date.now() - 600000} WHERE id = '${c.id}'`], { timeout: 10000 });
        const conv2 = await createConversation(gw, [c.id, b.id]);
        assert.ok(conv2.id);
        const r = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() });
        assert.deepEqual(r.body, { cleaned: [c.id], count: 1 });
        base = await expectDelta(gw, base, {
          zombies_cleaned: 1, user_status_broadcasts: 1, user_status_deliveries: 1, db_updates: 1,
          status_broadcast_latency_seconds_count: 1,
        }, 'zombie cleaned');
      }

      // The histogram is cumulative and its +Inf bucket is its count.
      const text = await scrape(gw);
      promtool(text);
      const all = parse(text);
      const buckets = Object.keys(all).filter((k) => k.startsWith('meeshy_status_broadcast_latency_seconds_bucket'));
      assert.ok(buckets.length >= 2);
      const counts = buckets.map((k) => all[k]);
      for (let i = 1; i < counts.length; i++) assert.ok(counts[i] >= counts[i - 1], 'buckets are cumulative');
      assert.equal(all['meeshy_status_broadcast_latency_seconds_bucket{le="+Inf"}'], base.meeshy_status_broadcast_latency_seconds_count);
      assert.ok(all.meeshy_status_broadcast_latency_seconds_sum > 0);
      sb.close();
    } finally {
      await gw.stop();
      assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/);
    }
  });
});

describe('logs', () => {
  test('[CONNECT], [DISCONNECT], [CLEANUP] at info, Broadcast USER_STATUS at debug, never a token', T, async () => {
    const tokens = [];
    const gw = await startGateway({ env: { LOG_LEVEL: 'debug', MAINTENANCE_INTERVAL_MS: '200', OFFLINE_THRESHOLD_MS: '400' } });
    let gwInfo;
    try {
      const a = await createUser(gw, uname('la'));
      const b = await createUser(gw, uname('lb'));
      const conv = await createConversation(gw, [a.id, b.id]);
      const anon = await createAnonymous(gw, conv.id, uname('lanon'));
      const ta = userToken(a.id);
      const tb = userToken(b.id);
      tokens.push(ta, tb, anon.sessionToken, adminToken());
      const sb = await connect(gw, { token: tb });
      // Every way a token reaches the gateway: auth payload, Authorization header, query string.
      const sa1 = await connect(gw, { token: ta });
      const sa2 = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, extraHeaders: { Authorization: `Bearer ${ta}` } });
      const sa3 = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, query: { token: ta } });
      await withTimeout(Promise.all([sa2, sa3].map((s) => new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); }))), 5000, 'header and query connects');
      const sn = await connect(gw, { sessionToken: anon.sessionToken });
      // A refused token and REST calls with tokens (valid, and one with a bad signature).
      const bad = `${ta.slice(0, -4)}AAAA`;
      tokens.push(bad);
      await withTimeout(new Promise((resolve) => {
        const s = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token: bad } });
        s.once('connect_error', () => { s.close(); resolve(); });
        s.once('connect', () => { s.close(); resolve(); });
      }), 5000, 'refused connect');
      assert.equal((await gw.api('GET', '/api/users/me', { token: ta })).status, 200);
      assert.equal((await gw.api('GET', '/api/users/me', { token: bad })).status, 401);
      assert.equal((await gw.api('GET', '/api/users/me', { sessionToken: anon.sessionToken })).status, 200);
      assert.equal((await gw.api('GET', '/api/users/me', { sessionToken: 'not-a-session-token-xyz' })).status, 401);
      tokens.push('not-a-session-token-xyz');
      for (const s of [sa1, sa2, sa3, sn]) s.close();
      await waitUntil(() => new RegExp(`\\[DISCONNECT\\] user=${a.id}[^\\n]*conns=0`).test(gw.log), { what: '[DISCONNECT] of a' });
      await waitUntil(() => /\[CLEANUP\] cleaned 0 zombies/.test(gw.log), { what: '[CLEANUP] line' });
      sb.close();
      await waitUntil(() => new RegExp(`\\[DISCONNECT\\] user=${b.id}`).test(gw.log), { what: '[DISCONNECT] of b' });
      await gw.stop();

      const line = (re) => gw.log.split('\n').find((l) => re.test(l));
      assert.match(line(new RegExp(`\\[CONNECT\\] user=${a.id}`)), /^\S+Z INFO +\[CONNECT\]/);
      assert.match(line(new RegExp(`\\[DISCONNECT\\] user=${a.id}`)), /^\S+Z INFO +\[DISCONNECT\]/);
      assert.match(line(/\[CLEANUP\] cleaned/), /^\S+Z INFO +\[CLEANUP\]/);
      assert.match(line(new RegExp(`Broadcast USER_STATUS user=${a.id}`)), /^\S+Z DEBUG Broadcast USER_STATUS/);
      assert.ok(line(new RegExp(`\\[CONNECT\\] user=${anon.id}`)), 'the anonymous connect is logged');
      for (const t of tokens) {
        assert.ok(!gw.log.includes(t), `a token appeared in the log: ${t.slice(0, 12)}…`);
        // Nor its signature alone, which is what a log of "the bad part" would show.
        const sig = t.split('.')[2];
        if (sig && sig.length > 8) assert.ok(!gw.log.includes(sig), 'a token signature appeared in the log');
      }
      assert.doesNotMatch(gw.log, /eyJ[\w-]+\.eyJ[\w-]+/, 'a JWT appeared in the log');

      // At LOG_LEVEL=info: the info lines stay, the debug ones go.
      gwInfo = await startGateway({ env: { LOG_LEVEL: 'info' } });
      const u = await createUser(gwInfo, uname('li'));
      const v = await createUser(gwInfo, uname('lv'));
      await createConversation(gwInfo, [u.id, v.id]);
      const sv = await connect(gwInfo, { token: userToken(v.id) });
      const su = await connect(gwInfo, { token: userToken(u.id) });
      await waitUntil(() => sv.statuses.some((e) => e.userId === u.id), { what: 'status delivered' });
      su.close();
      sv.close();
      await waitUntil(() => new RegExp(`\\[DISCONNECT\\] user=${v.id}`).test(gwInfo.log), { what: '[DISCONNECT] at info' });
      await gwInfo.stop();
      assert.match(gwInfo.log, new RegExp(`INFO +\\[CONNECT\\] user=${u.id}`));
      assert.doesNotMatch(gwInfo.log, /Broadcast USER_STATUS/);
      assert.doesNotMatch(gwInfo.log, / DEBUG /);
    } finally {
      if (gw.exitCode === null && gw.signal === null) await gw.stop();
      if (gwInfo && gwInfo.exitCode === null && gwInfo.signal === null) await gwInfo.stop();
      assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/);
    }
  });
});
