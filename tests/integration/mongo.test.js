'use strict';
// MongoDB mode end to end (SPEC §3 "Storage", §2 flows 1, 2, 5, §4 "a store that is down"): the
// real binary with DATABASE_URL=mongodb://… against minimongo, a MongoDB wire server with real
// query and update semantics, started here with a command log so the tests can check what
// reached the database: Meeshy's collections and fields, one bulk update per batch, writes
// kept through an outage and applied after it, reconciliation after a crash.
//
// minimongo comes from MINIMONGO_DIR, else from ../shared/minimongo next to the repository; it
// is copied to a temporary directory and installed there (npm ci --omit=dev). Without it the
// tests are skipped, with the reason.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { io } = require('socket.io-client');
const {
  ROOT, startGateway, userToken, createUser, createConversation, withTimeout, waitUntil,
} = require('./helpers');

const T = { timeout: 60000 };
const SRC = process.env.MINIMONGO_DIR || path.join(ROOT, '..', 'shared', 'minimongo');
const HAVE = fs.existsSync(path.join(SRC, 'server.js'));
let seq = 0;
const uname = (p) => `${p}${process.pid}x${++seq}`;

function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 180000, ...opts }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

// Starts minimongo with a command log; resolves to {uri, proc, logLines(), stop()}.
async function startMinimongo() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-mm-'));
  const app = path.join(dir, 'app');
  fs.cpSync(SRC, app, { recursive: true, filter: (p) => !p.includes('node_modules') });
  await run('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app });
  const logFile = path.join(dir, 'commands.log');
  const proc = spawn(process.execPath, ['server.js', '--port', '0', '--log', logFile],
    { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const uri = await withTimeout(new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /READY (mongodb:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.once('exit', (code) => reject(new Error(`minimongo exited with ${code}: ${err}`)));
  }), 20000, 'minimongo READY');
  const mm = {
    uri,
    proc,
    // The commands received, parsed; optionally only those of one command name.
    logLines(command) {
      if (!fs.existsSync(logFile)) return [];
      const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      return command ? lines.filter((l) => l.command === command) : lines;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await withTimeout(exited, 10000, 'minimongo exit');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return mm;
}

const oidOf = (v) => (v && typeof v === 'object' && v.$oid) || v;
const dateOf = (v) => (v && typeof v === 'object' && v.$date) ? Date.parse(v.$date) : v;

// The statements of the update commands on coll (in database db) that target person id.
function updatesOf(mm, db, coll, id) {
  const out = [];
  for (const l of mm.logLines('update')) {
    if (l.db !== db || l.collection !== coll) continue;
    for (const u of l.cmd.updates || []) {
      if (oidOf(u.q && u.q._id) === id) out.push({ cmd: l.cmd, stmt: u });
    }
  }
  return out;
}

function connect(gw, token) {
  const s = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000, auth: { token } });
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => { s.close(); reject(e); });
  }), 5000, 'socket.io connect');
}

function dbName(gw) {
  return new URL(gw.databaseUrl).pathname.replace(/^\//, '');
}

function mongoUrl(mm) {
  return `${mm.uri}/pgmongo_${process.pid}_${++seq}`;
}

describe('MongoDB mode', { skip: HAVE ? false : `minimongo not found (set MINIMONGO_DIR)` }, () => {
  let mm;
  before(async () => { mm = await startMinimongo(); }, { timeout: 200000 });
  after(async () => { if (mm) await mm.stop(); });

  test('indexes at start, provisioning writes Meeshy documents, presence goes out as $set updates', T, async () => {
    const gw = await startGateway({ databaseUrl: mongoUrl(mm) });
    const db = dbName(gw);
    try {
      const ci = mm.logLines('createIndexes').filter((l) => l.db === db);
      const names = Object.fromEntries(ci.map((l) => [l.collection, l.cmd.indexes.map((i) => i.name).sort()]));
      assert.deepEqual(names.User, ['isOnline_1', 'isOnline_1_lastActiveAt_1', 'lastActiveAt_1', 'username_1']);
      assert.deepEqual(names.AnonymousParticipant, ['conversationId_1', 'isOnline_1', 'isOnline_1_lastActiveAt_1', 'lastActiveAt_1', 'sessionToken_1']);
      assert.deepEqual(names.ConversationMember, ['conversationId_1', 'conversationId_1_userId_1', 'userId_1']);

      const alice = await createUser(gw, uname('alice'), { displayName: 'Alice' });
      const bob = await createUser(gw, uname('bob'));
      const conv = await createConversation(gw, [alice.id, bob.id], { title: 'mongo' });
      const ins = mm.logLines('insert').filter((l) => l.db === db && l.collection === 'User')
        .flatMap((l) => l.cmd.documents);
      const doc = ins.find((d) => oidOf(d._id) === alice.id);
      assert.ok(doc, 'the user document was inserted with the id returned');
      assert.equal(doc.username, alice.username);
      assert.equal(doc.displayName, 'Alice');
      assert.equal(doc.isOnline, false);
      assert.equal(doc.lastActiveAt, null);
      assert.equal(doc.role, 'USER');
      const convIns = mm.logLines('insert').filter((l) => l.db === db && l.collection === 'Conversation')
        .flatMap((l) => l.cmd.documents);
      assert.ok(convIns.some((d) => oidOf(d._id) === conv.id && d.title === 'mongo'));

      const before = Date.now();
      const s = await connect(gw, userToken(alice.id));
      const on = await waitUntil(() => updatesOf(mm, db, 'User', alice.id)
        .find((u) => u.stmt.u.$set && u.stmt.u.$set.isOnline === true), { timeoutMs: 5000, what: 'the online update' });
      assert.equal(on.cmd.ordered, false, 'an unordered bulk write');
      assert.deepEqual(Object.keys(on.stmt.u.$set).sort(), ['isOnline', 'lastActiveAt']);
      assert.ok(dateOf(on.stmt.u.$set.lastActiveAt) >= before - 1000);

      s.close();
      const off = await waitUntil(() => updatesOf(mm, db, 'User', alice.id)
        .find((u) => u.stmt.u.$set && u.stmt.u.$set.isOnline === false), { timeoutMs: 5000, what: 'the offline update' });
      assert.ok(dateOf(off.stmt.u.$set.lastSeen) >= dateOf(on.stmt.u.$set.lastActiveAt));
      assert.equal(off.stmt.u.$set.lastActiveAt, undefined, 'a disconnect is not activity');

      const r = await gw.api('GET', `/api/users/${alice.id}`, { token: userToken(bob.id) });
      assert.equal(r.status, 200);
      assert.equal(r.body.isOnline, false);
      assert.equal(Date.parse(r.body.lastSeen), dateOf(off.stmt.u.$set.lastSeen));
      assert.equal((await gw.api('GET', '/readyz')).status, 200);
    } finally {
      await gw.stop();
    }
  });

  test('a MongoDB outage: /readyz 503, the disconnect write is kept and applied once it is back', T, async () => {
    const gw = await startGateway({ databaseUrl: mongoUrl(mm) });
    const db = dbName(gw);
    let outage = false;
    try {
      const alice = await createUser(gw, uname('alice'));
      const s = await connect(gw, userToken(alice.id));
      await waitUntil(() => updatesOf(mm, db, 'User', alice.id).length > 0, { timeoutMs: 5000, what: 'the online update' });

      mm.proc.kill('SIGUSR1'); // minimongo: close every connection and refuse new ones
      outage = true;
      await waitUntil(async () => (await gw.api('GET', '/readyz')).status === 503,
        { timeoutMs: 15000, intervalMs: 200, what: '/readyz 503 during the outage' });
      const failures = (gw.log.match(/apply_batch: MongoDB unavailable/g) || []).length;
      s.close();
      // The offline write is queued; wait until the writer has failed to apply it at least once.
      await waitUntil(() => (gw.log.match(/apply_batch: MongoDB unavailable/g) || []).length > failures,
        { timeoutMs: 15000, intervalMs: 100, what: 'a failed batch during the outage' });
      assert.equal(updatesOf(mm, db, 'User', alice.id).filter((u) => u.stmt.u.$set.isOnline === false).length, 0);

      mm.proc.kill('SIGUSR1'); // back
      outage = false;
      const off = await waitUntil(() => updatesOf(mm, db, 'User', alice.id)
        .find((u) => u.stmt.u.$set.isOnline === false), { timeoutMs: 20000, what: 'the offline update after the outage' });
      assert.ok(dateOf(off.stmt.u.$set.lastSeen) <= Date.now());
      await waitUntil(async () => (await gw.api('GET', '/readyz')).status === 200,
        { timeoutMs: 15000, intervalMs: 200, what: '/readyz 200 after the outage' });
    } finally {
      if (outage) mm.proc.kill('SIGUSR1');
      await gw.stop();
    }
  });

  test('after a crash, the next start sets the persons it left online offline (lastSeen = lastActiveAt)', T, async () => {
    const url = mongoUrl(mm);
    const gw1 = await startGateway({ databaseUrl: url });
    const db = dbName(gw1);
    const alice = await createUser(gw1, uname('alice'));
    const bob = await createUser(gw1, uname('bob'));
    const s = await connect(gw1, userToken(alice.id));
    const on = await waitUntil(() => updatesOf(mm, db, 'User', alice.id)
      .find((u) => u.stmt.u.$set.isOnline === true), { timeoutMs: 5000, what: 'the online update' });
    await gw1.stop('SIGKILL');
    s.close();
    const isPipeline = (l) => l.db === db && l.collection === 'User'
      && (l.cmd.updates || []).some((u) => Array.isArray(u.u));
    const before = mm.logLines('update').filter(isPipeline).length;

    const gw2 = await startGateway({ databaseUrl: url });
    try {
      const rec = mm.logLines('update').filter(isPipeline).slice(before);
      assert.equal(rec.length, 1, 'one pipeline update on User at start');
      assert.deepEqual(rec[0].cmd.updates[0].q, { isOnline: true });
      assert.equal(rec[0].cmd.updates[0].multi, true);
      const r = await gw2.api('GET', `/api/users/${alice.id}`, { token: userToken(bob.id) });
      assert.equal(r.status, 200);
      assert.equal(r.body.isOnline, false);
      assert.equal(Date.parse(r.body.lastSeen), dateOf(on.stmt.u.$set.lastActiveAt));
    } finally {
      await gw2.stop();
    }
  });
});
