'use strict';
// Shared helpers for the integration tests: start the real presence-gateway binary on a free
// loopback port with a temporary database, mint tokens, call the REST API, provision data,
// and wait for events with a bound (never sleep and hope).
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.GATEWAY_BIN || path.join(ROOT, 'build', 'gateway', 'presence-gateway');
const SECRET = 'integration-test-secret-0123456789abcdef';

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

// Mints an HS256 JWT the way any client library would (independently of the gateway's code).
function mintToken(claims, { secret = SECRET, alg = 'HS256' } = {}) {
  const header = b64url(JSON.stringify({ alg, typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const hashes = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };
  let sig = '';
  if (hashes[alg]) sig = b64url(crypto.createHmac(hashes[alg], secret).update(`${header}.${payload}`).digest());
  return `${header}.${payload}.${sig}`;
}

function userToken(userId, { role, ttl = 3600, ...rest } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { userId, iat: now, exp: now + ttl, ...rest };
  if (role) claims.role = role;
  return mintToken(claims);
}

function adminToken() {
  return userToken('0000000000000000000000ad', { role: 'ADMIN' });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

// Polls cond() until it returns a truthy value, at most timeoutMs.
async function waitUntil(cond, { timeoutMs = 5000, intervalMs = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// Which store the tests run on: the embedded SQLite by default, or MongoDB when
// PG_TEST_MONGO_URI names a server (minimongo in scripts/test, or a real mongod): each gateway
// then gets its own fresh database on it.
function freshDatabaseUrl(dir) {
  const base = process.env.PG_TEST_MONGO_URI;
  if (base) return `${base.replace(/\/+$/, '')}/pgit_${crypto.randomBytes(6).toString('hex')}`;
  return `sqlite:${path.join(dir, 'presence.db')}`;
}

// Starts the gateway. Resolves once it logged its READY line with the bound port.
// databaseUrl: reuse another gateway's store (restart tests), else a fresh one.
async function startGateway({ env = {}, args = [], databaseUrl, keepDir = false } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-it-'));
  const dbUrl = databaseUrl || freshDatabaseUrl(dir);
  const childEnv = {
    PATH: process.env.PATH,
    HOST: '127.0.0.1',
    PORT: '0',
    JWT_SECRET: SECRET,
    DATABASE_URL: dbUrl,
    LOG_LEVEL: 'debug',
    ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1',
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || 'print_stacktrace=1:halt_on_error=1',
    ...env,
  };
  const child = spawn(BIN, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const gw = {
    child, dir, databaseUrl: dbUrl, log: '', port: 0, url: '', exited: null, exitCode: null, signal: null,
  };
  gw.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => { gw.exitCode = code; gw.signal = signal; resolve({ code, signal }); });
  });
  const onData = (d) => { gw.log += d.toString(); };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  await withTimeout(new Promise((resolve, reject) => {
    const check = () => {
      const m = gw.log.match(/\[READY\] listening on http:\/\/[^:\s]+:(\d+)/);
      if (m) { gw.port = Number(m[1]); gw.url = `http://127.0.0.1:${gw.port}`; resolve(); return true; }
      return false;
    };
    if (check()) return;
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('exit', (code) => reject(new Error(`gateway exited with ${code} before READY:\n${gw.log}`)));
  }), 20000, 'gateway READY');

  gw.stop = async (signal = 'SIGTERM') => {
    if (gw.exitCode === null && gw.signal === null) child.kill(signal);
    const r = await withTimeout(gw.exited, 20000, 'gateway exit');
    if (!keepDir) fs.rmSync(dir, { recursive: true, force: true });
    assertNoSanitizerReport(gw);
    return r;
  };
  gw.api = (method, p, opts) => api(gw, method, p, opts);
  return gw;
}

// A sanitizer report in the gateway's output fails the test that ran it.
function assertNoSanitizerReport(gw) {
  const m = gw.log.match(/((ERROR|WARNING): (Address|Leak|Thread)Sanitizer[^\n]*|runtime error:[^\n]*)/);
  if (m) throw new Error(`sanitizer report from the gateway: ${m[1]}\n${gw.log.slice(-4000)}`);
}

// Calls the REST API. Returns {status, headers, body} with body parsed as JSON when possible.
async function api(gw, method, p, { token, sessionToken, body, headers = {}, raw } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (sessionToken) h['x-session-token'] = sessionToken;
  let payload;
  if (raw !== undefined) payload = raw;
  else if (body !== undefined) { payload = JSON.stringify(body); h['content-type'] = 'application/json'; }
  const res = await fetch(gw.url + p, { method, headers: h, body: payload });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, body: json, text };
}

// Provisions users and conversations through the admin API.
async function createUser(gw, username, extra = {}) {
  const r = await api(gw, 'POST', '/api/admin/users', { token: adminToken(), body: { username, ...extra } });
  if (r.status !== 201) throw new Error(`createUser ${username}: ${r.status} ${r.text}`);
  return r.body;
}

async function createConversation(gw, memberIds = [], extra = {}) {
  const r = await api(gw, 'POST', '/api/admin/conversations', { token: adminToken(), body: extra });
  if (r.status !== 201) throw new Error(`createConversation: ${r.status} ${r.text}`);
  for (const userId of memberIds) {
    const m = await api(gw, 'POST', `/api/admin/conversations/${r.body.id}/members`, { token: adminToken(), body: { userId } });
    if (m.status !== 201) throw new Error(`addMember: ${m.status} ${m.text}`);
  }
  return r.body;
}

async function createAnonymous(gw, conversationId, username) {
  const r = await api(gw, 'POST', '/api/admin/anonymous', { token: adminToken(), body: { conversationId, username } });
  if (r.status !== 201) throw new Error(`createAnonymous: ${r.status} ${r.text}`);
  return r.body;
}

// Reads one unlabelled sample of a Prometheus metric from /metrics (NaN when absent).
async function metric(gw, name) {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

// Resolves with the socket once a socket.io-client socket is connected (rejects on connect_error).
function connected(s, ms = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    if (s.connected) { resolve(s); return; }
    s.once('connect', () => resolve(s));
    s.once('connect_error', (err) => reject(err));
  }), ms, 'socket.io connect');
}

// For sockets that record their user:status events in s.statuses and keep s.waiters (the
// tests' client()): resolves with the first event matching pred, at most ms.
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

module.exports = {
  BIN, ROOT, SECRET, mintToken, userToken, adminToken, startGateway, api, createUser,
  createConversation, createAnonymous, waitUntil, withTimeout, assertNoSanitizerReport, metric,
  connected, waitStatus,
};
