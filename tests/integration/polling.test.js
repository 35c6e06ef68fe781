'use strict';
// @mongo-mode
// Engine.IO HTTP long-polling and the upgrade to WebSocket (SPEC §3 "Socket.IO", §4): the
// official socket.io-client with its DEFAULT transports (polling first, then the upgrade) and
// with transports: ['polling'] alone, is a full member of presence; and the protocol's answers
// to raw HTTP requests (unknown sid, bad EIO/transport, an over-size POST, two GETs at once, a
// session that never sends CONNECT), CORS for browsers.
//
// Nothing here sleeps and hopes: every wait is for an event or a condition, with a bound.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { io } = require('socket.io-client');
const {
  startGateway, userToken, createUser, createConversation, withTimeout, waitUntil, connected, waitStatus,
} = require('./helpers');

const T = { timeout: 20000 };
let seq = 0;
const uname = (p) => `${p}${process.pid}p${++seq}`;

async function stopClean(gw) {
  if (!gw) return;
  await gw.stop();
  assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/, 'sanitizer report');
  assert.doesNotMatch(gw.log, /eyJ[\w-]+\.eyJ[\w-]+/, 'a JWT appeared in the log');
}

// A socket.io-client socket that records every user:status it receives.
function client(gw, token, opts = {}) {
  const s = io(gw.url, { reconnection: false, forceNew: true, timeout: 5000, auth: { token }, ...opts });
  s.statuses = [];
  s.waiters = [];
  s.on('user:status', (ev) => {
    s.statuses.push(ev);
    for (const w of s.waiters.slice()) w();
  });
  return s;
}

function emitAck(s, ...args) {
  return withTimeout(new Promise((resolve) => s.emit(...args, (...res) => resolve(res))), 5000, `ack of ${args[0]}`);
}

function disconnected(s, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    if (!s.connected) { resolve('already'); return; }
    s.once('disconnect', (reason) => resolve(reason));
  }), ms, 'disconnect');
}

// Raw Engine.IO over HTTP.
async function handshake(gw, extra = '') {
  const r = await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling${extra}`);
  assert.equal(r.status, 200);
  const text = await r.text();
  assert.equal(text[0], '0');
  return { open: JSON.parse(text.slice(1)), headers: r.headers };
}
const pollUrl = (gw, sid) => `${gw.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;

// A raw WebSocket probing the upgrade of polling session sid, open; until(text) waits for a
// message.
async function openProbe(gw, sid) {
  const WebSocket = require('ws');
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket&sid=${sid}`);
  const msgs = [];
  let notify = () => {};
  ws.on('message', (d) => { msgs.push(d.toString()); notify(); });
  await withTimeout(new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); }), 5000, 'probe open');
  const until = (text) => withTimeout(new Promise((res) => {
    notify = () => { if (msgs.includes(text)) res(); };
    notify();
  }), 5000, `"${text}" on the probe`);
  return { ws, until };
}

describe('polling: socket.io-client', () => {
  let gw;
  before(async () => { gw = await startGateway(); });
  after(async () => { await stopClean(gw); });

  test('default transports connect by polling and end on websocket; user:status flows before and after the upgrade, none lost', T, async () => {
    const a = await createUser(gw, uname('up'));
    const b = await createUser(gw, uname('watch'));
    const peers = [];
    for (let i = 0; i < 5; i++) peers.push(await createUser(gw, uname('peer')));
    await createConversation(gw, [a.id, b.id, ...peers.map((p) => p.id)]);
    const sb = await connected(client(gw, userToken(b.id), { transports: ['websocket'] }));

    const sa = client(gw, userToken(a.id)); // default transports: ['polling', 'websocket']
    const upgraded = withTimeout(new Promise((resolve) => {
      sa.io.on('open', () => sa.io.engine.once('upgrade', (t) => resolve(t.name)));
    }), 5000, 'upgrade');
    await connected(sa);
    // A's online event reaches B whatever transport A is on.
    const on = await waitStatus(sb, (e) => e.userId === a.id && e.isOnline, 'A online at B');
    assert.equal(on.status, 'online');
    // Peers come online while A's engine is still polling or upgrading: A gets each event
    // exactly once, in order per peer.
    const ps = await Promise.all(peers.map((p) => connected(client(gw, userToken(p.id), { transports: ['websocket'] }))));
    for (const p of peers) await waitStatus(sa, (e) => e.userId === p.id && e.isOnline, `peer ${p.username} online at A`);
    assert.equal(await upgraded, 'websocket');
    assert.equal(sa.io.engine.transport.name, 'websocket');
    // After the upgrade: events still flow both ways, acks and binary included.
    ps[0].close();
    await waitStatus(sa, (e) => e.userId === peers[0].id && !e.isOnline, 'peer 0 offline at A (after the upgrade)');
    const [echoed, bin] = await emitAck(sa, 'echo', 'after upgrade', Buffer.from([7, 8, 9]));
    assert.equal(echoed, 'after upgrade');
    assert.deepEqual([...bin], [7, 8, 9]);
    for (const p of peers) {
      assert.equal(sa.statuses.filter((e) => e.userId === p.id && e.isOnline).length, 1, 'one online event per peer');
    }
    sa.close();
    await waitStatus(sb, (e) => e.userId === a.id && !e.isOnline, 'A offline at B');
    for (const s of ps.slice(1)) s.close();
    sb.close();
  });

  test('transports: [polling] alone carries presence both ways, acks and binary', T, async () => {
    const a = await createUser(gw, uname('poll'));
    const b = await createUser(gw, uname('mate'));
    await createConversation(gw, [a.id, b.id]);
    const sb = await connected(client(gw, userToken(b.id), { transports: ['polling'] }));
    const sa = await connected(client(gw, userToken(a.id), { transports: ['polling'] }));
    assert.equal(sa.io.engine.transport.name, 'polling');
    await waitStatus(sb, (e) => e.userId === a.id && e.isOnline, 'A online at B (both polling)');
    const c = await createUser(gw, uname('third'));
    await createConversation(gw, [a.id, c.id]);
    const sc = await connected(client(gw, userToken(c.id), { transports: ['websocket'] }));
    await waitStatus(sa, (e) => e.userId === c.id && e.isOnline, 'C online at A (polling)');
    sc.close();
    await waitStatus(sa, (e) => e.userId === c.id && !e.isOnline, 'C offline at A (polling)');
    const [r0, r1, r2] = await emitAck(sa, 'echo', 'x', { n: [1, 2] }, Buffer.from([1, 2, 3]));
    assert.equal(r0, 'x');
    assert.deepEqual(r1, { n: [1, 2] });
    assert.deepEqual([...r2], [1, 2, 3]);
    // A big binary payload goes as base64 in a POST and comes back in a GET.
    const big = Buffer.alloc(50000, 0xab);
    const [back] = await emitAck(sa, 'echo', big);
    assert.equal(back.length, big.length);
    assert.ok(Buffer.from(back).equals(big));
    const [unknown] = await emitAck(sa, 'no-such-event');
    assert.deepEqual(unknown, { success: false, error: 'unknown event' });
    const gone = disconnected(sa);
    sb.close();
    await waitStatus(sa, (e) => e.userId === b.id && !e.isOnline, 'B offline at A');
    sa.close();
    assert.equal(await gone, 'io client disconnect');
    // The REST view agrees: nobody online any more.
    await waitUntil(async () => {
      const r = await gw.api('GET', `/api/users/${a.id}`, { token: userToken(b.id) });
      return r.status === 200 && r.body.isOnline === false;
    }, { what: 'A offline in the REST view' });
  });

  test('over polling, credentials may come with the handshake request: Authorization header, token query', T, async () => {
    const a = await createUser(gw, uname('hdr'));
    const b = await createUser(gw, uname('qry'));
    const sa = io(gw.url, {
      reconnection: false, forceNew: true, transports: ['polling'],
      extraHeaders: { Authorization: `Bearer ${userToken(a.id)}` },
    });
    const sb = io(gw.url, { reconnection: false, forceNew: true, transports: ['polling'], query: { token: userToken(b.id) } });
    await connected(sa);
    await connected(sb);
    for (const id of [a.id, b.id]) {
      await waitUntil(async () => {
        const r = await gw.api('GET', `/api/users/${id}`, { token: userToken(a.id) });
        return r.status === 200 && r.body.isOnline === true;
      }, { what: `${id} online in the REST view` });
    }
    sa.close();
    sb.close();
  });

  test('a refused token over polling gets connect_error with the message', T, async () => {
    const s = client(gw, 'not.a.token', { transports: ['polling'] });
    const err = await withTimeout(new Promise((resolve) => s.once('connect_error', resolve)), 5000, 'connect_error');
    assert.equal(err.message, 'Invalid token');
    s.close();
  });
});

describe('polling: raw requests', () => {
  let gw;
  before(async () => {
    gw = await startGateway({
      env: {
        CONNECT_TIMEOUT_MS: '700', MAX_PAYLOAD_BYTES: '4096', CORS_ORIGINS: 'http://app.example',
        REQUEST_TIMEOUT_MS: '1500',
      },
    });
  });
  after(async () => { await stopClean(gw); });

  test('unknown sid, bad EIO, bad transport, bad handshake method', T, async () => {
    let r = await fetch(pollUrl(gw, 'ffffffffffffffff'));
    assert.equal(r.status, 400);
    assert.deepEqual(await r.json(), { code: 1, message: 'Session ID unknown' });
    r = await fetch(pollUrl(gw, 'ffffffffffffffff'), { method: 'POST', body: '3' });
    assert.equal(r.status, 400);
    assert.deepEqual(await r.json(), { code: 1, message: 'Session ID unknown' });
    r = await fetch(`${gw.url}/socket.io/?EIO=3&transport=polling`);
    assert.equal(r.status, 400);
    assert.equal((await r.json()).code, 5);
    r = await fetch(`${gw.url}/socket.io/?EIO=4&transport=carrier-pigeon`);
    assert.equal(r.status, 400);
    assert.deepEqual(await r.json(), { code: 0, message: 'Transport unknown' });
    r = await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling`, { method: 'POST', body: '40' });
    assert.equal(r.status, 400);
    assert.equal((await r.json()).code, 2);
  });

  test('a POST over MAX_PAYLOAD_BYTES is answered 413 and the session closes', T, async () => {
    const { open } = await handshake(gw);
    assert.equal(open.maxPayload, 4096);
    const r = await fetch(pollUrl(gw, open.sid), { method: 'POST', body: `4${'x'.repeat(5000)}` });
    assert.equal(r.status, 413);
    await r.text();
    const g = await fetch(pollUrl(gw, open.sid));
    assert.equal(g.status, 400);
    assert.deepEqual(await g.json(), { code: 1, message: 'Session ID unknown' });
  });

  test('several packets in one POST; a malformed POST is answered 400 and closes the session', T, async () => {
    const { open } = await handshake(gw);
    // Two CONNECTs without credentials, one to an unknown namespace: two answers on one GET.
    let r = await fetch(pollUrl(gw, open.sid), { method: 'POST', body: '40\x1e40/nope,' });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'ok');
    r = await fetch(pollUrl(gw, open.sid));
    assert.equal(r.status, 200);
    assert.deepEqual((await r.text()).split('\x1e').sort(), ['44/nope,{"message":"Invalid namespace"}', '44{"message":"Authentication required"}']);
    r = await fetch(pollUrl(gw, open.sid), { method: 'POST', body: 'not a packet' });
    assert.equal(r.status, 400);
    await r.text();
    r = await fetch(pollUrl(gw, open.sid));
    assert.equal(r.status, 400);
    await r.text();
  });

  test('a second GET while one waits closes the session: 400 for one, the close packet for the other', T, async () => {
    const { open } = await handshake(gw);
    // Whichever arrives first is held (nothing to send); the other overlaps it.
    const [x, y] = await withTimeout(Promise.all([fetch(pollUrl(gw, open.sid)), fetch(pollUrl(gw, open.sid))]), 5000, 'both GETs answered');
    const answers = [[x.status, await x.text()], [y.status, await y.text()]].sort((m, n) => m[0] - n[0]);
    assert.equal(answers[0][0], 200);
    assert.equal(answers[0][1], '1', 'the held GET gets the close packet');
    assert.equal(answers[1][0], 400);
    assert.deepEqual(JSON.parse(answers[1][1]).code, 3);
    const r = await fetch(pollUrl(gw, open.sid));
    assert.equal(r.status, 400);
    await r.text();
  });

  test('a GET right behind "5" on the probing WebSocket gets 400: the upgrade is read first', T, async () => {
    // The reference server reads the WebSocket's "5" before a GET sent after it; here they
    // arrive on different threads, so the GET waits for the probe to be read. Repeated, as
    // a race would otherwise pass by luck.
    for (let i = 0; i < 15; i++) {
      const { open } = await handshake(gw);
      const { ws } = await openProbe(gw, open.sid);
      // as the official suite does: "2probe" and "5" at once, then the GET
      ws.send('2probe');
      ws.send('5');
      const r = await fetch(pollUrl(gw, open.sid));
      assert.equal(r.status, 400, `iteration ${i}: a GET after "5"`);
      await r.text();
      ws.close();
    }
  });

  test('a GET after "3probe" without "5" gets a noop, and the upgrade still completes', T, async () => {
    const { open } = await handshake(gw);
    const { ws, until } = await openProbe(gw, open.sid);
    ws.send('2probe');
    await until('3probe');
    const r = await withTimeout(fetch(pollUrl(gw, open.sid)), 5000, 'the GET answered');
    assert.equal(r.status, 200);
    assert.equal(await r.text(), '6');
    ws.send('5');
    ws.send('2');
    await until('3'); // the pong, on the WebSocket
    const after = await fetch(pollUrl(gw, open.sid));
    assert.equal(after.status, 400);
    await after.text();
    ws.close();
  });

  test('a session that never sends CONNECT is closed after CONNECT_TIMEOUT_MS', T, async () => {
    const t0 = Date.now();
    const { open } = await handshake(gw);
    const r = await withTimeout(fetch(pollUrl(gw, open.sid)), 5000, 'the held GET ends');
    assert.equal(r.status, 200);
    assert.equal(await r.text(), '1', 'the close packet');
    const took = Date.now() - t0;
    assert.ok(took >= 600 && took < 3000, `closed after ${took} ms`);
    const g = await fetch(pollUrl(gw, open.sid));
    assert.equal(g.status, 400);
    await g.text();
  });

  test('a POST body trickled in slower than REQUEST_TIMEOUT_MS allows is cut off', T, async () => {
    const { open } = await handshake(gw);
    const sock = net.connect(gw.port, '127.0.0.1');
    await withTimeout(new Promise((resolve) => sock.once('connect', resolve)), 3000, 'tcp connect');
    const t0 = Date.now();
    const closed = new Promise((resolve) => sock.once('close', () => resolve(Date.now() - t0)));
    sock.on('error', () => {});
    sock.write(`POST /socket.io/?EIO=4&transport=polling&sid=${open.sid} HTTP/1.1\r\nHost: x\r\n` +
      'Content-Type: text/plain\r\nContent-Length: 20\r\n\r\n');
    // One byte every 300 ms: the 20 bytes would take 6 s.
    const timer = setInterval(() => { if (!sock.destroyed) sock.write('4'); }, 300);
    try {
      const took = await withTimeout(closed, 5000, 'the gateway closes the trickling POST');
      assert.ok(took >= 1400 && took < 4000, `closed after ${took} ms`);
    } finally {
      clearInterval(timer);
      sock.destroy();
    }
  });

  test('CORS: an allowed origin is echoed with credentials, a preflight answers 204, others get nothing', T, async () => {
    let r = await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: 'http://app.example' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.equal(r.headers.get('access-control-allow-credentials'), 'true');
    const sid = JSON.parse((await r.text()).slice(1)).sid;
    r = await fetch(pollUrl(gw, sid), { method: 'OPTIONS', headers: { Origin: 'http://app.example', 'Access-Control-Request-Method': 'POST' } });
    assert.equal(r.status, 204);
    assert.equal(r.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.match(r.headers.get('access-control-allow-methods'), /POST/);
    assert.match(r.headers.get('access-control-allow-headers'), /Authorization/);
    r = await fetch(pollUrl(gw, sid), { method: 'POST', body: '1', headers: { Origin: 'http://evil.example' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    await r.text();
  });
});

describe('polling: graceful shutdown', () => {
  test('SIGTERM says goodbye to a polling client, then exits 0', T, async () => {
    const gw = await startGateway();
    const u = await createUser(gw, uname('bye'));
    const s = await connected(client(gw, userToken(u.id), { transports: ['polling'] }));
    const reason = disconnected(s, 10000);
    // The goodbye reaches a polling client through its pending GET: shut down while one is out
    // (engine.io-client's polling transport marks it), after the gateway counted the socket.
    await waitUntil(async () => {
      const m = (await (await fetch(`${gw.url}/metrics`)).text()).match(/^meeshy_connected_sockets (\S+)$/m);
      return m && Number(m[1]) === 1;
    }, { what: 'one connected socket' });
    // The client marks a GET as out before the gateway holds it: wait for the gateway's own
    // gauge of held GETs.
    await waitUntil(async () => {
      const m = (await (await fetch(`${gw.url}/metrics`)).text()).match(/^meeshy_polling_requests_held (\S+)$/m);
      return m && Number(m[1]) === 1;
    }, { what: 'a GET held by the gateway' });
    const { code } = await gw.stop();
    assert.equal(code, 0);
    assert.equal(await reason, 'io server disconnect');
    assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|runtime error:/);
  });

  test('a polling client with no GET out at SIGTERM collects its goodbye on a new connection after the loops stopped', T, async () => {
    const gw = await startGateway();
    try {
      const u = await createUser(gw, uname('late'));
      const { open } = await handshake(gw);
      let r = await fetch(pollUrl(gw, open.sid), { method: 'POST', body: `40${JSON.stringify({ token: userToken(u.id) })}` });
      assert.equal(r.status, 200);
      await r.text();
      r = await fetch(pollUrl(gw, open.sid));
      assert.match(await r.text(), /^40\{"sid":"/, 'the CONNECT ack');
      // No GET out now. The loops say goodbye and stop; the listening socket then has an
      // accept thread of its own (the loops accepted on it until then).
      gw.child.kill('SIGTERM');
      await waitUntil(() => /accept worker 0 on its own thread/.test(gw.log), { timeoutMs: 5000, what: 'the loops stopped' });
      // New TCP connections, not ones kept alive from before. As the reference server does,
      // the queued disconnect comes first and the close packet with the GET after it.
      const lateGet = async () => {
        const sock = net.connect(gw.port, '127.0.0.1');
        sock.on('error', () => {});
        let buf = '';
        sock.on('data', (d) => { buf += d.toString(); });
        const closed = new Promise((resolve) => sock.once('close', resolve));
        sock.write(`GET /socket.io/?EIO=4&transport=polling&sid=${open.sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        await withTimeout(closed, 5000, 'the answer to a late GET');
        assert.match(buf, /^HTTP\/1\.1 200 /, buf);
        return buf.slice(buf.indexOf('\r\n\r\n') + 4);
      };
      assert.equal(await lateGet(), '41', 'the disconnect');
      assert.equal(await lateGet(), '1', 'the close packet');
      const { code } = await withTimeout(gw.exited, 10000, 'gateway exit');
      assert.equal(code, 0);
    } finally {
      await stopClean(gw);
    }
  });
});
