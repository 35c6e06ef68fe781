'use strict';
// @mongo-mode
// REST API of presence-gateway (SPEC §3 "REST", §4): every route, every error status, CORS,
// /metrics, /readyz and the activity throttle, against the real binary on a free loopback port.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const {
  startGateway, userToken, adminToken, mintToken, createUser, createConversation,
  createAnonymous, waitUntil,
} = require('./helpers');

const OID = /^[0-9a-f]{24}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const T = { timeout: 15000 };

// Stops the gateway and checks that it left no sanitizer report and never logged a token.
async function stopClean(gw) {
  if (!gw) return;
  await gw.stop();
  assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|runtime error:/, 'sanitizer report in the gateway log');
  assert.doesNotMatch(gw.log, /eyJ[\w-]+\.eyJ[\w-]+/, 'a JWT appeared in the log');
  assert.doesNotMatch(gw.log, /[0-9a-f]{64}/, 'a session token appeared in the log');
}

function assertError(r, status, what) {
  assert.equal(r.status, status, `${what}: expected ${status}, got ${r.status} ${r.text}`);
  assert.equal(typeof r.body, 'object', `${what}: JSON error body`);
  assert.deepEqual(Object.keys(r.body).sort(), ['error', 'message'], `${what}: error keys`);
  assert.equal(typeof r.body.error, 'string');
  assert.equal(typeof r.body.message, 'string');
  if (status === 401) assert.match(r.headers.get('www-authenticate') || '', /^Bearer/, `${what}: WWW-Authenticate`);
}

function assertPersonView(v, { anonymous = false } = {}) {
  assert.match(v.id, OID);
  assert.equal(typeof v.username, 'string');
  assert.equal(v.isAnonymous, anonymous);
  assert.equal(typeof v.isOnline, 'boolean');
  assert.ok(['online', 'away', 'offline'].includes(v.status), `status ${v.status}`);
  const colors = { online: '#10b981', away: '#f59e0b', offline: '#6b7280' };
  assert.equal(v.statusColor, colors[v.status]);
  for (const k of ['lastActiveAt', 'lastSeen']) assert.ok(v[k] === null || ISO.test(v[k]), `${k} ${v[k]}`);
  if (anonymous) {
    assert.match(v.conversationId, OID);
  } else {
    for (const k of ['displayName', 'firstName', 'lastName', 'avatar']) assert.ok(k in v, `missing ${k}`);
    assert.ok(['USER', 'ADMIN', 'BIGBOSS'].includes(v.role));
  }
}

// Reads one sample of a Prometheus metric (name with its label set, exactly).
async function metric(gw, series) {
  const r = await gw.api('GET', '/metrics');
  assert.equal(r.status, 200);
  for (const line of r.text.split('\n')) {
    if (line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    if (line.slice(0, i) === series) return Number(line.slice(i + 1));
  }
  throw new Error(`metric ${series} not found`);
}

describe('REST with default settings', () => {
  let gw;
  let alice; let bob; let carol; let conv; let anon;

  before(async () => {
    gw = await startGateway();
    alice = await createUser(gw, 'alice', { displayName: 'Alice A', firstName: 'Alice', email: 'alice@example.com' });
    bob = await createUser(gw, 'bob');
    carol = await createUser(gw, 'carol');
    conv = await createConversation(gw, [alice.id, bob.id], { title: 'team' });
    anon = await createAnonymous(gw, conv.id, 'guest');
  });
  after(async () => { await stopClean(gw); });

  test('health and readiness', T, async () => {
    const h = await gw.api('GET', '/healthz');
    assert.equal(h.status, 200);
    assert.deepEqual(h.body, { status: 'ok' });
    const r = await gw.api('GET', '/readyz');
    assert.equal(r.status, 200);
    const store = process.env.PG_TEST_MONGO_URI ? 'mongodb' : 'sqlite';
    assert.deepEqual(r.body, { status: 'ready', store });
  });

  test('provisioning shapes', T, async () => {
    assertPersonView(alice);
    assert.equal(alice.username, 'alice');
    assert.equal(alice.displayName, 'Alice A');
    assert.equal(alice.role, 'USER');
    assert.equal(alice.isOnline, false);
    assert.equal(alice.status, 'offline');
    assert.equal(alice.lastActiveAt, null);
    assert.match(conv.id, OID);
    const c = await gw.api('POST', '/api/admin/conversations', { token: adminToken(), body: { title: 'x', type: 'direct' } });
    assert.equal(c.status, 201);
    assert.deepEqual(Object.keys(c.body).sort(), ['id', 'members', 'title', 'type']);
    assert.equal(c.body.type, 'direct');
    assert.equal(c.body.members, 0);
    const d = await gw.api('POST', '/api/admin/conversations', { token: adminToken(), body: {} });
    assert.equal(d.status, 201);
    assert.equal(d.body.type, 'group');
    assert.equal(d.body.title, null);
    assertPersonView(anon, { anonymous: true });
    assert.equal(anon.conversationId, conv.id);
    assert.match(anon.sessionToken, /^[0-9a-f]{64}$/);
    const mirrored = await gw.api('POST', '/api/admin/users', {
      token: adminToken(), body: { username: 'mirror', id: 'abcdefabcdefabcdefabcdef', role: 'ADMIN', isActive: true },
    });
    assert.equal(mirrored.status, 201);
    assert.equal(mirrored.body.id, 'abcdefabcdefabcdefabcdef');
    assert.equal(mirrored.body.role, 'ADMIN');
  });

  test('members: added, re-added (added 0), unknown user, unknown conversation', T, async () => {
    const tok = adminToken();
    const c = await gw.api('POST', '/api/admin/conversations', { token: tok, body: {} });
    const a1 = await gw.api('POST', `/api/admin/conversations/${c.body.id}/members`, { token: tok, body: { userId: carol.id } });
    assert.equal(a1.status, 201);
    assert.deepEqual(a1.body, { conversationId: c.body.id, added: 1, members: 1 });
    const a2 = await gw.api('POST', `/api/admin/conversations/${c.body.id}/members`, { token: tok, body: { userId: carol.id } });
    assert.equal(a2.status, 201);
    assert.deepEqual(a2.body, { conversationId: c.body.id, added: 0, members: 1 });
    assertError(await gw.api('POST', `/api/admin/conversations/${c.body.id}/members`, { token: tok, body: { userId: '0123456789abcdef01234567' } }), 404, 'unknown user');
    assertError(await gw.api('POST', '/api/admin/conversations/0123456789abcdef01234567/members', { token: tok, body: { userId: carol.id } }), 404, 'unknown conversation');
    assertError(await gw.api('POST', '/api/admin/conversations/nope/members', { token: tok, body: { userId: carol.id } }), 400, 'bad conversation id');
    assertError(await gw.api('POST', `/api/admin/conversations/${c.body.id}/members`, { token: tok, body: { userId: 'nope' } }), 400, 'bad user id');
    assertError(await gw.api('POST', `/api/admin/conversations/${c.body.id}/members`, { token: tok, body: {} }), 400, 'missing userId');
  });

  test('GET /api/users/me for a user and for an anonymous participant', T, async () => {
    const r = await gw.api('GET', '/api/users/me', { token: userToken(alice.id) });
    assert.equal(r.status, 200);
    assertPersonView(r.body);
    assert.equal(r.body.id, alice.id);
    assert.equal(r.body.email, 'alice@example.com');
    assert.equal(r.body.isActive, true);
    // The call itself is activity: lastActiveAt is set, the person is not connected.
    assert.match(r.body.lastActiveAt, ISO);
    assert.equal(r.body.isOnline, false);
    assert.equal(r.body.status, 'away');
    assert.match(r.headers.get('content-type'), /^application\/json/);

    const a = await gw.api('GET', '/api/users/me', { sessionToken: anon.sessionToken });
    assert.equal(a.status, 200);
    assertPersonView(a.body, { anonymous: true });
    assert.equal(a.body.id, anon.id);
    assert.equal(a.body.username, 'guest');
  });

  test('a provisioned conversation lists its online participants first', T, async () => {
    // zed sorts last by name; once connected it must come first, with the live presence.
    const zed = await createUser(gw, 'zed');
    const ann = await createUser(gw, 'ann');
    const c2 = await createConversation(gw, [ann.id, zed.id], { title: 'online first' });
    const sock = io(gw.url, { transports: ['websocket'], auth: { token: userToken(zed.id) }, reconnection: false });
    try {
      await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('connect_error', reject); });
      const r = await waitUntil(async () => {
        const x = await gw.api('GET', `/api/conversations/${c2.id}/participants`, { token: userToken(ann.id) });
        return x.status === 200 && x.body.participants[0].isOnline ? x : null;
      }, { timeoutMs: 5000, what: 'zed online in the participants list' });
      const ps = r.body.participants;
      assert.deepEqual(ps.map((p) => p.username), ['zed', 'ann']);
      assert.equal(ps[0].status, 'online');
      assert.equal(ps[1].isOnline, false);
    } finally {
      sock.close();
    }
  });

  test('GET /api/users/:id', T, async () => {
    const r = await gw.api('GET', `/api/users/${bob.id}`, { token: userToken(alice.id) });
    assert.equal(r.status, 200);
    assertPersonView(r.body);
    assert.equal(r.body.username, 'bob');
    assert.equal(r.body.email, undefined, 'no email in a public view');
    assertError(await gw.api('GET', '/api/users/0123456789abcdef01234567', { token: userToken(alice.id) }), 404, 'unknown user');
    assertError(await gw.api('GET', `/api/users/${anon.id}`, { token: userToken(alice.id) }), 404, 'anonymous id');
    assertError(await gw.api('GET', '/api/users/xyz', { token: userToken(alice.id) }), 400, 'malformed id');
  });

  test('GET /api/users/status', T, async () => {
    const ids = [alice.id, bob.id, '0123456789abcdef01234567', 'bad', anon.id].join(',');
    const r = await gw.api('GET', `/api/users/status?ids=${ids}`, { token: userToken(bob.id) });
    assert.equal(r.status, 200);
    assert.deepEqual(Object.keys(r.body).sort(), ['notFound', 'users']);
    assert.deepEqual(r.body.users.map((u) => u.id).sort(), [alice.id, bob.id].sort());
    r.body.users.forEach((u) => assertPersonView(u));
    assert.deepEqual(r.body.notFound.sort(), ['0123456789abcdef01234567', 'bad', anon.id].sort());
    const many = Array.from({ length: 501 }, (_, i) => i.toString(16).padStart(24, '0')).join(',');
    assertError(await gw.api('GET', `/api/users/status?ids=${many}`, { token: userToken(bob.id) }), 400, '501 ids');
    const five = Array.from({ length: 500 }, (_, i) => i.toString(16).padStart(24, '0')).join(',');
    const ok = await gw.api('GET', `/api/users/status?ids=${five}`, { token: userToken(bob.id) });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.notFound.length, 500);
    assertError(await gw.api('GET', '/api/users/status', { token: userToken(bob.id) }), 400, 'no ids');
  });

  test('GET /api/conversations/:id/participants: members, anonymous, admins; 403, 404, 400', T, async () => {
    // Make bob active now (away, not online), alice is older activity too: both away; guest never
    // active through REST yet in this test file order is not relied upon: compute the expectation.
    await gw.api('GET', '/api/users/me', { token: userToken(bob.id) });
    const r = await gw.api('GET', `/api/conversations/${conv.id}/participants`, { token: userToken(alice.id) });
    assert.equal(r.status, 200);
    assert.equal(r.body.conversationId, conv.id);
    const ps = r.body.participants;
    assert.deepEqual(ps.map((p) => p.id).sort(), [alice.id, bob.id, anon.id].sort());
    ps.forEach((p) => assertPersonView(p, { anonymous: p.isAnonymous }));
    const rank = { online: 0, away: 1, offline: 2 };
    for (let i = 1; i < ps.length; i++) {
      const a = ps[i - 1]; const b = ps[i];
      const ka = [a.isOnline ? 0 : 1, rank[a.status], a.username.toLowerCase()];
      const kb = [b.isOnline ? 0 : 1, rank[b.status], b.username.toLowerCase()];
      assert.ok(ka[0] < kb[0] || (ka[0] === kb[0] && (ka[1] < kb[1] || (ka[1] === kb[1] && ka[2] <= kb[2]))),
        `order ${JSON.stringify(ka)} before ${JSON.stringify(kb)}`);
    }
    const g = await gw.api('GET', `/api/conversations/${conv.id}/participants`, { sessionToken: anon.sessionToken });
    assert.equal(g.status, 200);
    const adm = await gw.api('GET', `/api/conversations/${conv.id}/participants`, { token: adminToken() });
    assert.equal(adm.status, 200);
    assertError(await gw.api('GET', `/api/conversations/${conv.id}/participants`, { token: userToken(carol.id) }), 403, 'non-member');
    assertError(await gw.api('GET', '/api/conversations/0123456789abcdef01234567/participants', { token: adminToken() }), 404, 'unknown conversation');
    assertError(await gw.api('GET', '/api/conversations/zz/participants', { token: userToken(alice.id) }), 400, 'bad id');
  });

  test('401 matrix', T, async () => {
    const now = Math.floor(Date.now() / 1000);
    const inactive = await createUser(gw, 'sleeper', { isActive: false });
    const cases = [
      ['no credentials', {}],
      ['garbage token', { token: 'not.a.jwt' }],
      ['expired', { token: userToken(alice.id, { ttl: -60 }) }],
      ['not yet valid', { token: mintToken({ userId: alice.id, iat: now, nbf: now + 600, exp: now + 3600 }) }],
      ['alg none', { token: mintToken({ userId: alice.id, iat: now, exp: now + 3600 }, { alg: 'none' }) }],
      ['HS512', { token: mintToken({ userId: alice.id, iat: now, exp: now + 3600 }, { alg: 'HS512' }) }],
      ['wrong key', { token: mintToken({ userId: alice.id, iat: now, exp: now + 3600 }, { secret: 'another-secret' }) }],
      ['unknown user', { token: userToken('0123456789abcdef01234567') }],
      ['inactive user', { token: userToken(inactive.id) }],
      ['bad session token', { sessionToken: 'f'.repeat(64) }],
      ['basic scheme', { headers: { authorization: 'Basic YTpi' } }],
    ];
    for (const [what, opts] of cases) assertError(await gw.api('GET', '/api/users/me', opts), 401, what);
    // The sub claim works as the id when userId is absent.
    const sub = await gw.api('GET', '/api/users/me', { token: mintToken({ sub: alice.id, iat: now, exp: now + 3600 }) });
    assert.equal(sub.status, 200);
    assert.equal(sub.body.id, alice.id);
  });

  test('admin routes: 401, 403 for users and demoted admins, inactive admin 401', T, async () => {
    const demoted = await createUser(gw, 'demoted', { role: 'USER' });
    const sleepy = await createUser(gw, 'sleepyadmin', { role: 'ADMIN', isActive: false });
    const boss = await createUser(gw, 'boss', { role: 'BIGBOSS' });
    const body = { username: 'x1' };
    assertError(await gw.api('POST', '/api/admin/users', { body }), 401, 'no token');
    assertError(await gw.api('POST', '/api/admin/users', { token: userToken(alice.id), body }), 403, 'plain user');
    assertError(await gw.api('POST', '/api/admin/users', { sessionToken: anon.sessionToken, body }), 403, 'anonymous');
    // Its token still says ADMIN, the store says USER now.
    assertError(await gw.api('POST', '/api/admin/users', { token: userToken(demoted.id, { role: 'ADMIN' }), body }), 403, 'demoted admin');
    assertError(await gw.api('POST', '/api/admin/users', { token: userToken(sleepy.id, { role: 'ADMIN' }), body }), 401, 'inactive admin');
    const ok = await gw.api('POST', '/api/admin/users', { token: userToken(boss.id, { role: 'BIGBOSS' }), body });
    assert.equal(ok.status, 201);
    assertError(await gw.api('GET', '/api/admin/maintenance/stats', { token: userToken(bob.id) }), 403, 'stats as user');
    assertError(await gw.api('POST', `/api/admin/users/${bob.id}/disconnect`, { token: userToken(bob.id) }), 403, 'disconnect as user');
  });

  test('provisioning: 400 and 409', T, async () => {
    const tok = adminToken();
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: { username: 'alice' } }), 409, 'taken username');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: { username: 'fresh1', id: alice.id } }), 409, 'taken id');
    assertError(await gw.api('POST', '/api/admin/conversations', { token: tok, body: { id: conv.id } }), 409, 'taken conversation id');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: {} }), 400, 'missing username');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: { username: 42 } }), 400, 'username type');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: { username: 'r1', role: 'ROOT' } }), 400, 'bad role');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: { username: 'r2', isActive: 'yes' } }), 400, 'isActive type');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, body: { username: 'r3', id: 'xyz' } }), 400, 'bad id');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, raw: '{"username":', headers: { 'content-type': 'application/json' } }), 400, 'not JSON');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok, raw: '[1,2]', headers: { 'content-type': 'application/json' } }), 400, 'not an object');
    assertError(await gw.api('POST', '/api/admin/users', { token: tok }), 400, 'no body');
    assertError(await gw.api('POST', '/api/admin/conversations', { token: tok, body: { title: 7 } }), 400, 'title type');
    assertError(await gw.api('POST', '/api/admin/anonymous', { token: tok, body: { conversationId: conv.id } }), 400, 'anonymous without username');
    assertError(await gw.api('POST', '/api/admin/anonymous', { token: tok, body: { conversationId: '0123456789abcdef01234567', username: 'g' } }), 404, 'anonymous, unknown conversation');
  });

  test('maintenance and disconnect admin routes', T, async () => {
    const s = await gw.api('GET', '/api/admin/maintenance/stats', { token: adminToken() });
    assert.equal(s.status, 200, s.text);
    for (const k of ['maintenanceActive', 'intervalMs', 'offlineThresholdMs', 'lastRunAt', 'lastRunDurationMs',
      'zombiesCleanedLastRun', 'zombiesCleanedTotal', 'onlineUsers', 'onlineAnonymous', 'liveConnections', 'broadcastsTotal']) {
      assert.ok(k in s.body, `stats.${k}`);
    }
    const c = await gw.api('POST', '/api/admin/maintenance/cleanup-zombies', { token: adminToken() });
    assert.equal(c.status, 200, c.text);
    assert.ok(Array.isArray(c.body.cleaned));
    assert.equal(c.body.count, c.body.cleaned.length);
    const d = await gw.api('POST', `/api/admin/users/${bob.id}/disconnect`, { token: adminToken() });
    assert.equal(d.status, 200, d.text);
    assert.deepEqual(d.body, { userId: bob.id, disconnected: 0 });
    assertError(await gw.api('POST', '/api/admin/users/0123456789abcdef01234567/disconnect', { token: adminToken() }), 404, 'unknown user');
    assertError(await gw.api('POST', '/api/admin/users/bad/disconnect', { token: adminToken() }), 400, 'bad id');
  });

  test('404 unknown route, 405 with Allow, OPTIONS without CORS', T, async () => {
    assertError(await gw.api('GET', '/api/nothing'), 404, 'unknown api route');
    assertError(await gw.api('GET', '/'), 404, 'root');
    assertError(await gw.api('GET', '/api/users/me/extra'), 404, 'deeper path');
    const m = await gw.api('POST', '/api/users/me', { token: userToken(alice.id), body: {} });
    assertError(m, 405, 'POST on a GET route');
    assert.equal(m.headers.get('allow'), 'GET, HEAD, OPTIONS');
    const d = await gw.api('DELETE', '/api/admin/users');
    assertError(d, 405, 'DELETE on a POST route');
    assert.equal(d.headers.get('allow'), 'POST, OPTIONS');
    const o = await gw.api('OPTIONS', '/api/users/me', { headers: { origin: 'http://a.example' } });
    assert.equal(o.status, 204);
    assert.equal(o.headers.get('access-control-allow-origin'), null, 'no CORS without CORS_ORIGINS');
    assert.equal(o.headers.get('vary'), null);
    const g = await gw.api('GET', '/healthz', { headers: { origin: 'http://a.example' } });
    assert.equal(g.headers.get('access-control-allow-origin'), null);
  });

  test('/metrics: Prometheus text, labelled series from the start', T, async () => {
    const r = await gw.api('GET', '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    for (const name of ['meeshy_user_status_broadcasts_total', 'meeshy_online_users', 'meeshy_connected_sockets',
      'meeshy_zombies_cleaned_total', 'meeshy_db_updates_total', 'meeshy_status_broadcast_latency_seconds_bucket']) {
      assert.match(r.text, new RegExp(`^${name}[ {]`, 'm'), name);
    }
    assert.match(r.text, /^# TYPE meeshy_activity_updates_total counter$/m);
    assert.ok(Number.isFinite(await metric(gw, 'meeshy_activity_updates_total{result="written"}')));
    assert.ok(Number.isFinite(await metric(gw, 'meeshy_activity_updates_total{result="throttled"}')));
    const before = await metric(gw, 'meeshy_http_requests_total');
    await gw.api('GET', '/healthz');
    const after = await metric(gw, 'meeshy_http_requests_total');
    assert.equal(after - before, 2, 'the /healthz call and the /metrics call itself');
  });

  test('200 rapid requests by one user give exactly one lastActiveAt write', T, async () => {
    const u = await createUser(gw, 'rapid');
    const tok = userToken(u.id);
    const w0 = await metric(gw, 'meeshy_activity_updates_total{result="written"}');
    const t0 = await metric(gw, 'meeshy_activity_updates_total{result="throttled"}');
    // The writes of the tests before this one may still be gathering into a batch: count from
    // an empty queue, so that the rows below are this test's only.
    await waitUntil(async () => (await metric(gw, 'meeshy_db_write_queue_length')) === 0, { timeoutMs: 3000, what: 'earlier writes stored' });
    const d0 = await metric(gw, 'meeshy_db_updates_total');
    const first = await gw.api('GET', '/api/users/me', { token: tok });
    assert.equal(first.status, 200);
    assert.match(first.body.lastActiveAt, ISO);
    let last;
    for (let i = 1; i < 200; i += 1) {
      last = await gw.api('GET', '/api/users/me', { token: tok });
      assert.equal(last.status, 200);
    }
    assert.equal(last.body.lastActiveAt, first.body.lastActiveAt, 'lastActiveAt unchanged');
    assert.equal(await metric(gw, 'meeshy_activity_updates_total{result="written"}') - w0, 1);
    assert.equal(await metric(gw, 'meeshy_activity_updates_total{result="throttled"}') - t0, 199);
    // The write reaches the store within a second (batching writer).
    await waitUntil(async () => (await metric(gw, 'meeshy_db_updates_total')) - d0 >= 1, { timeoutMs: 3000, what: 'db write' });
    assert.equal(await metric(gw, 'meeshy_db_updates_total') - d0, 1);
    const again = await gw.api('GET', `/api/users/${u.id}`, { token: userToken(alice.id) });
    assert.equal(again.body.lastActiveAt, first.body.lastActiveAt, 'stored value is the one written');
  });

  test('keep-alive: several requests on one connection', T, async () => {
    const net = require('node:net');
    const sock = net.connect(gw.port, '127.0.0.1');
    let data = '';
    sock.on('data', (d) => { data += d.toString(); });
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitUntil(() => (data.match(/HTTP\/1\.1 200/g) || []).length === 1, { timeoutMs: 3000, what: 'first answer' });
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitUntil(() => (data.match(/HTTP\/1\.1 200/g) || []).length === 2, { timeoutMs: 3000, what: 'second answer' });
    assert.doesNotMatch(data, /Connection: close/i);
    sock.destroy();
  });
});

describe('REST limits: 413, CORS allowlist', () => {
  let gw;
  before(async () => {
    gw = await startGateway({ env: { MAX_PAYLOAD_BYTES: '4096', CORS_ORIGINS: 'http://app.example, http://other.example' } });
  });
  after(async () => { await stopClean(gw); });

  test('413 by Content-Length and by a chunked body', T, async () => {
    const big = JSON.stringify({ username: 'x'.repeat(5000) });
    assertError(await gw.api('POST', '/api/admin/users', { token: adminToken(), raw: big, headers: { 'content-type': 'application/json' } }), 413, 'Content-Length over the limit');
    // A streamed body has no Content-Length: the limit applies to what accumulates.
    const { Readable } = require('node:stream');
    const stream = Readable.from([Buffer.alloc(3000, 'a'), Buffer.alloc(3000, 'a')]);
    const res = await fetch(`${gw.url}/api/admin/users`, {
      method: 'POST', body: stream, duplex: 'half',
      headers: { authorization: `Bearer ${adminToken()}`, 'content-type': 'application/json' },
    });
    assert.equal(res.status, 413);
    const body = await res.json();
    assert.equal(body.error, 'payload_too_large');
    // Just under the limit is served.
    const ok = await gw.api('POST', '/api/admin/users', { token: adminToken(), body: { username: 'y'.repeat(90) } });
    assert.equal(ok.status, 201);
  });

  test('CORS: preflight, echo of a listed origin, nothing for others', T, async () => {
    const p = await gw.api('OPTIONS', '/api/users/me', {
      headers: { origin: 'http://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
    assert.equal(p.status, 204);
    assert.equal(p.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.equal(p.headers.get('access-control-allow-credentials'), 'true');
    assert.match(p.headers.get('access-control-allow-methods'), /GET/);
    const allowed = p.headers.get('access-control-allow-headers').toLowerCase();
    for (const h of ['authorization', 'content-type', 'x-session-token']) assert.ok(allowed.includes(h), h);
    assert.match(p.headers.get('vary'), /Origin/);

    const u = await createUser(gw, 'corsy');
    const g = await gw.api('GET', '/api/users/me', { token: userToken(u.id), headers: { origin: 'http://other.example' } });
    assert.equal(g.status, 200);
    assert.equal(g.headers.get('access-control-allow-origin'), 'http://other.example');
    assert.equal(g.headers.get('access-control-allow-credentials'), 'true');
    // Errors carry CORS headers too, so browsers can read them.
    const e = await gw.api('GET', '/api/users/me', { headers: { origin: 'http://app.example' } });
    assert.equal(e.status, 401);
    assert.equal(e.headers.get('access-control-allow-origin'), 'http://app.example');

    const n = await gw.api('GET', '/healthz', { headers: { origin: 'http://evil.example' } });
    assert.equal(n.status, 200);
    assert.equal(n.headers.get('access-control-allow-origin'), null);
    assert.match(n.headers.get('vary'), /Origin/);
    const np = await gw.api('OPTIONS', '/api/users/me', { headers: { origin: 'http://evil.example', 'access-control-request-method': 'GET' } });
    assert.equal(np.headers.get('access-control-allow-origin'), null);
    assertError(await gw.api('OPTIONS', '/api/unknown', { headers: { origin: 'http://app.example' } }), 404, 'preflight of an unknown route');
  });
});

describe('REST timeouts and CORS "*"', () => {
  let gw;
  const TIMEOUT_MS = 1500;
  before(async () => {
    gw = await startGateway({ env: { REQUEST_TIMEOUT_MS: String(TIMEOUT_MS), CORS_ORIGINS: '*' } });
  });
  after(async () => { await stopClean(gw); });

  test('CORS "*" echoes any origin with credentials', T, async () => {
    const g = await gw.api('GET', '/healthz', { headers: { origin: 'http://any.example' } });
    assert.equal(g.headers.get('access-control-allow-origin'), 'http://any.example');
    assert.equal(g.headers.get('access-control-allow-credentials'), 'true');
  });

  test('a slowloris client is closed within REQUEST_TIMEOUT_MS', T, async () => {
    const net = require('node:net');
    const sock = net.connect(gw.port, '127.0.0.1');
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const started = Date.now();
    let received = '';
    sock.on('data', (d) => { received += d.toString(); });
    sock.on('error', () => {});
    const closed = new Promise((res) => sock.once('close', res));
    const req = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ' + 'a'.repeat(200) + '\r\n\r\n';
    let i = 0;
    const timer = setInterval(() => {
      if (i < req.length && !sock.destroyed) sock.write(req[i++]);
    }, 300);
    try {
      await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('not closed')), TIMEOUT_MS + 1500))]);
    } finally {
      clearInterval(timer);
      sock.destroy();
    }
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= TIMEOUT_MS - 100, `closed too early (${elapsed} ms)`);
    assert.ok(elapsed <= TIMEOUT_MS + 1000, `closed after ${elapsed} ms`);
    assert.ok(i < req.length, 'the request never completed');
    assert.match(received, /^HTTP\/1\.1 408/, 'a 408 before the close');
  });

  test('a slow body is closed within REQUEST_TIMEOUT_MS', T, async () => {
    const net = require('node:net');
    const sock = net.connect(gw.port, '127.0.0.1');
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    let received = '';
    sock.on('data', (d) => { received += d.toString(); });
    sock.on('error', () => {});
    const closed = new Promise((res) => sock.once('close', res));
    const started = Date.now();
    sock.write(`POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${adminToken()}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`);
    const timer = setInterval(() => { if (!sock.destroyed) sock.write(' '); }, 300);
    try {
      await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('not closed')), TIMEOUT_MS + 1500))]);
    } finally {
      clearInterval(timer);
      sock.destroy();
    }
    const elapsed = Date.now() - started;
    assert.ok(elapsed <= TIMEOUT_MS + 1000, `closed after ${elapsed} ms`);
    assert.match(received, /^HTTP\/1\.1 408/);
  });

  test('an idle keep-alive connection is closed after the same time; a prompt request is served', T, async () => {
    const net = require('node:net');
    const sock = net.connect(gw.port, '127.0.0.1');
    let data = '';
    sock.on('data', (d) => { data += d.toString(); });
    sock.on('error', () => {});
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const closed = new Promise((res) => sock.once('close', res));
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitUntil(() => /HTTP\/1\.1 200/.test(data), { timeoutMs: 2000, what: 'answer' });
    const idleFrom = Date.now();
    await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('idle connection not closed')), TIMEOUT_MS + 1500))]);
    const idle = Date.now() - idleFrom;
    assert.ok(idle >= TIMEOUT_MS - 300 && idle <= TIMEOUT_MS + 1000, `idle close after ${idle} ms`);
  });
});
