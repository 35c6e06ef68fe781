'use strict';
// @mongo-mode
// Start and stop of presence-gateway (SPEC §2 flows 5 and 6), end to end on the real binary:
// a crash (SIGKILL) with persons online followed by a restart on the same database must leave
// nobody falsely online, with lastSeen = their lastActiveAt; a SIGTERM with clients connected
// must say goodbye to them, flush every acknowledged lastActiveAt write and exit 0 promptly.
// Everything is read back through the REST API of the restarted gateway, so the file runs on
// SQLite and on MongoDB alike; on SQLite the rows are also read with the sqlite3 CLI.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { execFileSync, spawn } = require('node:child_process');
const { io } = require('socket.io-client');
const {
  startGateway, userToken, adminToken, createUser, createConversation, createAnonymous, withTimeout, waitUntil, metric,
} = require('./helpers');

const MONGO = Boolean(process.env.PG_TEST_MONGO_URI);
const T = { timeout: 60000 };
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
let seq = 0;
const uname = (p) => `${p}${process.pid}l${++seq}`;

function sqliteRows(databaseUrl, ids) {
  const file = databaseUrl.slice('sqlite:'.length);
  const out = execFileSync('sqlite3', ['-cmd', '.timeout 5000', file,
    `SELECT id, isOnline, coalesce(lastActiveAt, ''), coalesce(lastSeen, '') FROM users WHERE id IN (${ids.map((i) => `'${i}'`).join(',')})`],
  { encoding: 'utf8', timeout: 10000 }).trim();
  const rows = {};
  for (const line of out.split('\n').filter(Boolean)) {
    const [id, on, la, ls] = line.split('|');
    rows[id] = { isOnline: Number(on), lastActiveAt: la ? Number(la) : null, lastSeen: ls ? Number(ls) : null };
  }
  return rows;
}

function connect(gw, u) {
  const auth = u.sessionToken ? { sessionToken: u.sessionToken } : { token: userToken(u.id) };
  const s = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000, auth });
  s.userId = u.id;
  s.statuses = [];
  s.on('user:status', (ev) => s.statuses.push(ev));
  s.gone = new Promise((resolve) => s.once('disconnect', (reason) => resolve({ reason, at: Date.now() })));
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (err) => reject(err));
  }), 5000, 'socket.io connect');
}

// /api/users/status is for persons in the store (a service admin token is not one): the
// tests read it as a user of their own, `reader`.
async function presence(gw, ids, reader) {
  const r = await gw.api('GET', `/api/users/status?ids=${ids.join(',')}`, { token: userToken(reader.id) });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.notFound, []);
  return Object.fromEntries(r.body.users.map((u) => [u.id, u]));
}

function checkLog(gw) {
  assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/, 'sanitizer report');
  assert.doesNotMatch(gw.log, /eyJ[\w-]+\.eyJ[\w-]+/, 'a JWT appeared in the log');
}

// With the gateway dead, marks `never` online with no lastActiveAt in its SQLite file.
async function markOnlineNeverActive(gw, never) {
  const file = gw.databaseUrl.slice('sqlite:'.length);
  execFileSync('sqlite3', ['-cmd', '.timeout 5000', file,
    `UPDATE users SET isOnline = 1, lastActiveAt = NULL, lastSeen = NULL WHERE id = '${never.id}'`], { timeout: 10000 });
  return true;
}

// Holds the write lock of a SQLite database with the sqlite3 CLI until release() is called:
// the gateway's writer then cannot apply anything (it retries, as for a store that is down).
async function lockDatabase(databaseUrl) {
  const file = databaseUrl.slice('sqlite:'.length);
  const p = spawn('sqlite3', [file], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { out += d; });
  const done = new Promise((resolve) => p.on('exit', resolve));
  p.stdin.write(".timeout 5000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n");
  await waitUntil(() => /locked/.test(out), { timeoutMs: 5000, what: 'the sqlite3 CLI to hold the lock' });
  return {
    async release() {
      if (p.exitCode === null) { p.stdin.end('ROLLBACK;\n.quit\n'); }
      await withTimeout(done, 5000, 'sqlite3 CLI exit');
    },
  };
}

function rmDir(gw) {
  if (gw) fs.rmSync(gw.dir, { recursive: true, force: true });
}

describe('lifecycle: crash and restart', () => {
  test('SIGKILL with persons online, then a restart: nobody falsely online, lastSeen = lastActiveAt', T, async () => {
    let gw1;
    let gw2;
    const socks = [];
    try {
      gw1 = await startGateway({ keepDir: true });
      const users = [];
      for (let i = 0; i < 4; i++) users.push(await createUser(gw1, uname('crash')));
      const never = await createUser(gw1, uname('never')); // never connected: stays as it was
      const reader = await createUser(gw1, uname('reader'));
      const conv = await createConversation(gw1, [...users.map((u) => u.id), reader.id]);
      const anon = await createAnonymous(gw1, conv.id, uname('anon'));
      const ids = users.map((u) => u.id);
      const writesBefore = await metric(gw1, 'meeshy_db_updates_total');
      for (const u of users) socks.push(await connect(gw1, u));
      socks.push(await connect(gw1, anon));
      // Wait until the connect writes (one row each) reached the store, so the crash leaves
      // them online there: that is what the restart has to repair.
      await waitUntil(async () => (await metric(gw1, 'meeshy_db_updates_total')) >= writesBefore + users.length + 1,
        { timeoutMs: 3000, what: 'connect writes in the store' });
      const live = await presence(gw1, ids, reader);
      for (const id of ids) {
        assert.equal(live[id].isOnline, true);
        assert.match(live[id].lastActiveAt, ISO);
      }
      if (!MONGO) {
        const rows = sqliteRows(gw1.databaseUrl, ids);
        for (const id of ids) {
          assert.equal(rows[id].isOnline, 1, 'online in the store before the crash');
          assert.equal(new Date(rows[id].lastActiveAt).toISOString(), live[id].lastActiveAt);
        }
      }

      const anonLive = (await gw1.api('GET', `/api/conversations/${conv.id}/participants`, { token: userToken(reader.id) }))
        .body.participants.find((p) => p.id === anon.id);
      assert.equal(anonLive.isOnline, true);

      const r = await gw1.stop('SIGKILL');
      assert.equal(r.signal, 'SIGKILL');
      for (const s of socks) await withTimeout(s.gone, 5000, 'client sees the crash');
      let repaired = users.length + 1;
      let nullActive;
      if (!MONGO) {
        // A person left online that was never active: lastSeen becomes the restart time.
        nullActive = await markOnlineNeverActive(gw1, never);
        repaired++;
      }

      const tStart = Date.now();
      gw2 = await startGateway({ databaseUrl: gw1.databaseUrl });
      assert.match(gw2.log, new RegExp(`\\[RECONCILE\\] set ${repaired} persons offline`));
      const parts = (await gw2.api('GET', `/api/conversations/${conv.id}/participants`, { token: userToken(reader.id) })).body.participants;
      const anonAfter = parts.find((p) => p.id === anon.id);
      assert.equal(anonAfter.isOnline, false, 'the anonymous participant falsely online');
      assert.equal(anonAfter.lastSeen, anonLive.lastActiveAt);
      assert.equal(anonAfter.lastActiveAt, anonLive.lastActiveAt);
      const after = await presence(gw2, [...ids, never.id], reader);
      for (const id of ids) {
        assert.equal(after[id].isOnline, false, `${id} falsely online after the restart`);
        assert.equal(after[id].lastActiveAt, live[id].lastActiveAt);
        assert.equal(after[id].lastSeen, live[id].lastActiveAt, 'lastSeen = lastActiveAt');
      }
      assert.equal(after[never.id].isOnline, false);
      assert.equal(after[never.id].lastActiveAt, null);
      if (nullActive) {
        const seen = Date.parse(after[never.id].lastSeen);
        assert.ok(seen >= tStart - 5 && seen <= Date.now(), `lastSeen ${after[never.id].lastSeen} is the restart time`);
      } else {
        assert.equal(after[never.id].lastSeen, null, 'a person never online keeps lastSeen null');
      }
      if (!MONGO) {
        const rows = sqliteRows(gw2.databaseUrl, ids);
        for (const id of ids) {
          assert.equal(rows[id].isOnline, 0);
          assert.equal(rows[id].lastSeen, rows[id].lastActiveAt);
        }
      }
      // The restarted gateway works: a reconnect is online again.
      const back = await connect(gw2, users[0]);
      await waitUntil(async () => (await presence(gw2, [users[0].id], reader))[users[0].id].isOnline, { what: 'online again' });
      back.close();
      const s = await gw2.api('GET', '/api/admin/maintenance/stats', { token: adminToken() });
      assert.equal(s.body.zombiesCleanedTotal, 0, 'the reconciliation, not the cleanup, repaired them');
    } finally {
      for (const s of socks) s.close();
      if (gw1 && gw1.exitCode === null && gw1.signal === null) await gw1.stop('SIGKILL');
      rmDir(gw1);
      if (gw2) { await gw2.stop(); checkLog(gw2); }
    }
  });
});

describe('lifecycle: graceful shutdown', () => {
  test('SIGTERM with clients connected: goodbye, exit 0 in < 5 s, every acknowledged write kept', T, async () => {
    let gw1;
    let gw2;
    const socks = [];
    try {
      // Every REST call is a lastActiveAt write (throttle 0), queued for the writer thread.
      gw1 = await startGateway({ keepDir: true, env: { ACTIVITY_THROTTLE_MS: '0', DISCONNECT_GRACE_MS: '5000' } });
      const connected = [];
      const active = [];
      const reader = await createUser(gw1, uname('reader'));
      for (let i = 0; i < 3; i++) connected.push(await createUser(gw1, uname('conn')));
      for (let i = 0; i < 6; i++) active.push(await createUser(gw1, uname('rest')));
      await createConversation(gw1, connected.map((u) => u.id));
      for (const u of connected) socks.push(await connect(gw1, u));
      const tab2 = await connect(gw1, connected[0]); // a second tab of the same person
      socks.push(tab2);

      // REST activity of several users that keeps going through the signal: each user loops on
      // GET /api/users/me until the gateway stops answering. For each user the last request
      // answered 200 is recorded; the lastActiveAt it wrote (or a later one, from a request
      // cut off after its write was queued) must be in the database after the restart.
      const acked = {};
      let exited = false;
      gw1.exited.then(() => { exited = true; });
      const loops = active.map(async (u) => {
        const token = userToken(u.id);
        while (!exited) {
          const t0 = Date.now();
          let r;
          try {
            r = await gw1.api('GET', '/api/users/me', { token });
          } catch {
            return; // refused or reset: the gateway is going
          }
          if (r.status !== 200) return;
          acked[u.id] = { t0, t1: Date.now(), n: (acked[u.id]?.n || 0) + 1 };
        }
      });
      await waitUntil(() => active.every((u) => acked[u.id]?.n >= 5), { timeoutMs: 10000, what: 'REST activity' });
      const t0 = Date.now();
      gw1.child.kill('SIGTERM');
      const reasons = await Promise.all(socks.map((s) => withTimeout(s.gone, 5000, 'disconnect on shutdown')));
      for (const { reason } of reasons) assert.ok(['io server disconnect', 'transport close'].includes(reason), reason);
      const r = await withTimeout(gw1.exited, 5000, 'exit within 5 s of SIGTERM');
      const took = Date.now() - t0;
      assert.equal(r.code, 0, `exit code ${r.code} signal ${r.signal}\n${gw1.log.slice(-3000)}`);
      assert.ok(took < 5000, `shutdown took ${took} ms`);
      assert.match(gw1.log, /\[SHUTDOWN\] done in \d+ ms\n/, 'no write left unflushed');
      checkLog(gw1);
      await withTimeout(Promise.all(loops), 5000, 'REST loops to end');

      gw2 = await startGateway({ databaseUrl: gw1.databaseUrl });
      // The shutdown marked everybody offline itself: the next start has nobody to repair.
      assert.match(gw2.log, /\[RECONCILE\] set 0 persons offline/);
      const ids = [...connected, ...active].map((u) => u.id);
      const after = await presence(gw2, ids, reader);
      for (const u of active) {
        const la = Date.parse(after[u.id].lastActiveAt);
        const w = acked[u.id];
        assert.ok(la >= w.t0 - 2 && la <= t0 + took + 2,
          `lastActiveAt ${after[u.id].lastActiveAt} of ${u.id} is older than its last acknowledged write (${new Date(w.t0).toISOString()})`);
        assert.equal(after[u.id].isOnline, false);
      }
      for (const u of connected) {
        const p = after[u.id];
        assert.equal(p.isOnline, false, 'a connected person is offline after a shutdown');
        assert.match(p.lastSeen, ISO);
        // The shutdown skips the disconnect grace: lastSeen is the shutdown time.
        const seen = Date.parse(p.lastSeen);
        assert.ok(seen >= t0 - 2 && seen <= t0 + took + 2, `lastSeen ${p.lastSeen} is the shutdown time`);
      }
      if (!MONGO) {
        const rows = sqliteRows(gw2.databaseUrl, ids);
        for (const u of active) assert.equal(new Date(rows[u.id].lastActiveAt).toISOString(), after[u.id].lastActiveAt);
        for (const u of connected) assert.equal(rows[u.id].isOnline, 0);
      }
    } finally {
      for (const s of socks) s.close();
      if (gw1 && gw1.exitCode === null && gw1.signal === null) await gw1.stop('SIGKILL');
      rmDir(gw1);
      if (gw2) { await gw2.stop(); checkLog(gw2); }
    }
  });

  test('SIGTERM with 200 connections of 50 persons: every one told, all offline, exit 0 in < 5 s', T, async () => {
    let gw1;
    let gw2;
    const socks = [];
    try {
      gw1 = await startGateway({ keepDir: true });
      const reader = await createUser(gw1, uname('reader'));
      const users = [];
      for (let i = 0; i < 50; i++) users.push(await createUser(gw1, uname('many')));
      // Conversations of 10: the shutdown's offline writes and broadcasts all happen at once.
      for (let i = 0; i < users.length; i += 10) await createConversation(gw1, users.slice(i, i + 10).map((u) => u.id));
      for (let tab = 0; tab < 4; tab++) {
        socks.push(...await Promise.all(users.map((u) => connect(gw1, u))));
      }
      await waitUntil(async () => (await metric(gw1, 'meeshy_connected_sockets')) === 200, { what: '200 sockets' });
      assert.equal(await metric(gw1, 'meeshy_online_users'), 50);
      const t0 = Date.now();
      gw1.child.kill('SIGTERM');
      const reasons = await Promise.all(socks.map((s) => withTimeout(s.gone, 5000, 'disconnect on shutdown')));
      for (const { reason } of reasons) assert.ok(['io server disconnect', 'transport close'].includes(reason), reason);
      const r = await withTimeout(gw1.exited, 5000, 'exit within 5 s of SIGTERM');
      const took = Date.now() - t0;
      assert.equal(r.code, 0, gw1.log.slice(-3000));
      assert.ok(took < 5000, `shutdown took ${took} ms`);
      assert.equal(reasons.filter((x) => x.reason === 'io server disconnect').length, 200, 'every client got the Socket.IO disconnect');
      checkLog(gw1);

      gw2 = await startGateway({ databaseUrl: gw1.databaseUrl });
      assert.match(gw2.log, /\[RECONCILE\] set 0 persons offline/);
      const after = await presence(gw2, users.map((u) => u.id), reader);
      for (const u of users) {
        assert.equal(after[u.id].isOnline, false);
        const seen = Date.parse(after[u.id].lastSeen);
        assert.ok(seen >= t0 - 2 && seen <= t0 + took + 2, `lastSeen ${after[u.id].lastSeen}`);
      }
    } finally {
      for (const s of socks) s.close();
      if (gw1 && gw1.exitCode === null && gw1.signal === null) await gw1.stop('SIGKILL');
      rmDir(gw1);
      if (gw2) { await gw2.stop(); checkLog(gw2); }
    }
  });

  test('a store that takes no write: SIGTERM gives up after its flush bound (exit 1), the restart repairs', { ...T, skip: MONGO ? 'locks the SQLite file with the sqlite3 CLI' : false }, async () => {
    let gw1;
    let gw2;
    let lock;
    const socks = [];
    try {
      gw1 = await startGateway({ keepDir: true });
      const reader = await createUser(gw1, uname('reader'));
      const a = await createUser(gw1, uname('stuck'));
      const writes = await metric(gw1, 'meeshy_db_updates_total');
      socks.push(await connect(gw1, a));
      await waitUntil(async () => (await metric(gw1, 'meeshy_db_updates_total')) === writes + 1, { what: 'connect write' });
      const live = (await presence(gw1, [a.id], reader))[a.id];
      lock = await lockDatabase(gw1.databaseUrl);
      const t0 = Date.now();
      gw1.child.kill('SIGTERM');
      assert.equal((await withTimeout(socks[0].gone, 5000, 'disconnect on shutdown')).reason, 'io server disconnect');
      const r = await withTimeout(gw1.exited, 20000, 'exit after the flush bound');
      const took = Date.now() - t0;
      assert.equal(r.code, 1, 'writes were left unflushed: not a clean exit');
      assert.ok(took >= 9000 && took < 16000, `gave up after ${took} ms`);
      assert.match(gw1.log, /\[SHUTDOWN\] done in \d+ ms \(some store writes could not be flushed\)/);
      checkLog(gw1);
      await lock.release();
      lock = null;

      gw2 = await startGateway({ databaseUrl: gw1.databaseUrl });
      assert.match(gw2.log, /\[RECONCILE\] set 1 persons offline/);
      const p = (await presence(gw2, [a.id], reader))[a.id];
      assert.equal(p.isOnline, false);
      assert.equal(p.lastSeen, live.lastActiveAt);
    } finally {
      for (const s of socks) s.close();
      if (lock) await lock.release();
      if (gw1 && gw1.exitCode === null && gw1.signal === null) await gw1.stop('SIGKILL');
      rmDir(gw1);
      if (gw2) { await gw2.stop(); checkLog(gw2); }
    }
  });

  test('a second SIGTERM while the store holds the shutdown up exits at once', { ...T, skip: MONGO ? 'locks the SQLite file with the sqlite3 CLI' : false }, async () => {
    let gw1;
    let gw2;
    let lock;
    const socks = [];
    try {
      gw1 = await startGateway({ keepDir: true });
      const reader = await createUser(gw1, uname('reader'));
      const a = await createUser(gw1, uname('impatient'));
      const writes = await metric(gw1, 'meeshy_db_updates_total');
      socks.push(await connect(gw1, a));
      await waitUntil(async () => (await metric(gw1, 'meeshy_db_updates_total')) === writes + 1, { what: 'connect write' });
      lock = await lockDatabase(gw1.databaseUrl);
      gw1.child.kill('SIGTERM');
      await withTimeout(socks[0].gone, 5000, 'disconnect on shutdown');
      await waitUntil(() => /\[SHUTDOWN\] signal Terminated/.test(gw1.log), { what: 'shutdown started' });
      assert.equal(gw1.exitCode, null, 'still flushing');
      const t0 = Date.now();
      gw1.child.kill('SIGTERM');
      const r = await withTimeout(gw1.exited, 3000, 'exit on the second signal');
      assert.equal(r.code, 1);
      assert.ok(Date.now() - t0 < 2000, `second signal took ${Date.now() - t0} ms`);
      assert.match(gw1.log, /\[SHUTDOWN\] second signal Terminated: exiting now/);
      await lock.release();
      lock = null;
      gw2 = await startGateway({ databaseUrl: gw1.databaseUrl });
      assert.match(gw2.log, /\[RECONCILE\] set 1 persons offline/);
      assert.equal((await presence(gw2, [a.id], reader))[a.id].isOnline, false);
    } finally {
      for (const s of socks) s.close();
      if (lock) await lock.release();
      if (gw1 && gw1.exitCode === null && gw1.signal === null) await gw1.stop('SIGKILL');
      rmDir(gw1);
      if (gw2) { await gw2.stop(); checkLog(gw2); }
    }
  });

  test('SIGINT is a graceful shutdown too; an idle gateway stops at once', T, async () => {
    const gw = await startGateway();
    try {
      const t0 = Date.now();
      gw.child.kill('SIGINT');
      const r = await withTimeout(gw.exited, 5000, 'exit on SIGINT');
      assert.equal(r.code, 0);
      assert.ok(Date.now() - t0 < 2000, `idle shutdown took ${Date.now() - t0} ms`);
      await waitUntil(() => /\[SHUTDOWN\] signal Interrupt/.test(gw.log), { what: 'the [SHUTDOWN] line' });
    } finally {
      await gw.stop();
      checkLog(gw);
    }
  });
});
