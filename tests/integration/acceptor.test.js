'use strict';
// The gateway's own accept loop in front of libmicrohttpd (routes/acceptor.c): raw TCP clients
// check that a WebSocket upgrade head is served however it arrives (split over many writes, or
// with the first frame in the same write), that every other request reaches libmicrohttpd
// untouched (keep-alive, an upgrade later on a kept-alive connection, the engine's own 400
// answers), that a head that never completes is closed after REQUEST_TIMEOUT_MS with a 408,
// and that MAX_CONNECTIONS holds for connections waiting in the acceptor.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const crypto = require('node:crypto');
const { startGateway, createUser, userToken, withTimeout } = require('./helpers');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function wsHead(key, { path = '/socket.io/?EIO=4&transport=websocket', extra = '' } = {}) {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
}

function acceptOf(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

// A masked client text frame.
function clientFrame(text) {
  const payload = Buffer.from(text);
  const mask = crypto.randomBytes(4);
  let head;
  if (payload.length < 126) head = Buffer.from([0x81, 0x80 | payload.length]);
  else { head = Buffer.from([0x81, 0x80 | 126, 0, 0]); head.writeUInt16BE(payload.length, 2); }
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// A raw connection with a growing input buffer and bounded waits on it.
function rawConn(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const c = { s, buf: Buffer.alloc(0), closed: false, waiters: [] };
    const poke = () => { for (const w of c.waiters.slice()) w(); };
    s.setNoDelay(true);
    s.on('data', (d) => { c.buf = Buffer.concat([c.buf, d]); poke(); });
    s.on('close', () => { c.closed = true; poke(); });
    s.on('error', () => {});
    s.on('connect', () => resolve(c));
    s.once('error', reject);
    // Resolves with pred(buf) once truthy; rejects after ms or when the socket closed first.
    c.until = (pred, ms, what) => withTimeout(new Promise((res, rej) => {
      const w = () => {
        const v = pred(c.buf);
        if (v) { c.waiters.splice(c.waiters.indexOf(w), 1); res(v); return; }
        if (c.closed) { c.waiters.splice(c.waiters.indexOf(w), 1); rej(new Error(`closed while waiting for ${what}: ${c.buf.toString('latin1')}`)); }
      };
      c.waiters.push(w);
      w();
    }), ms, what);
    c.closedP = (ms) => withTimeout(new Promise((res) => {
      const w = () => { if (c.closed) { c.waiters.splice(c.waiters.indexOf(w), 1); res(); } };
      c.waiters.push(w);
      w();
    }), ms, 'close');
  });
}

// The server frames after the HTTP head: [{opcode, text}] (unmasked, lengths < 64 KiB).
function framesAfter(buf, headEnd) {
  const out = [];
  let p = headEnd;
  while (p + 2 <= buf.length) {
    const op = buf[p] & 0x0f;
    let len = buf[p + 1] & 0x7f;
    let h = 2;
    if (len === 126) { if (p + 4 > buf.length) break; len = buf.readUInt16BE(p + 2); h = 4; }
    if (p + h + len > buf.length) break;
    out.push({ opcode: op, text: buf.subarray(p + h, p + h + len).toString() });
    p += h + len;
  }
  return out;
}

function headEnd(buf) {
  const i = buf.indexOf('\r\n\r\n');
  return i < 0 ? -1 : i + 4;
}

// Waits for a 101 with the right accept value and for frames matching pred. fast: the 101
// was written by the accept loop's path (no Date header) or by libmicrohttpd's (with one).
async function expect101(c, key, pred, what, { fast = true } = {}) {
  return c.until((b) => {
    const e = headEnd(b);
    if (e < 0) return null;
    const head = b.subarray(0, e).toString('latin1');
    assert.match(head, /^HTTP\/1\.1 101 /, 'status line');
    assert.ok(head.includes(`Sec-WebSocket-Accept: ${acceptOf(key)}\r\n`), `accept value in ${head}`);
    assert.equal(/\r\nDate: /i.test(head), !fast, `${fast ? 'the accept loop' : 'libmicrohttpd'} answers: ${head}`);
    const frames = framesAfter(b, e);
    return pred(frames) ? frames : null;
  }, 5000, what);
}

const hasOpen = (frames) => frames.length >= 1 && frames[0].opcode === 1 && frames[0].text.startsWith('0{"sid":"');

test('accept loop: WebSocket heads, first frames, keep-alive, slowloris, connection limit', { timeout: 60000 }, async (t) => {
  const gw = await startGateway({ env: { REQUEST_TIMEOUT_MS: '800' } });
  try {
    const user = await createUser(gw, 'acceptor-user');
    const token = userToken(user.id);

    await t.test('a head split over many small writes gets the 101 and the open packet', async () => {
      const c = await rawConn(gw.port);
      const key = crypto.randomBytes(16).toString('base64');
      const head = Buffer.from(wsHead(key));
      for (let i = 0; i < head.length; i += 3) {
        await new Promise((r) => c.s.write(head.subarray(i, i + 3), r));
        await new Promise((r) => setTimeout(r, 2)); // separate segments, not a wait for a result
      }
      const frames = await expect101(c, key, hasOpen, '101 + open packet');
      assert.match(frames[0].text, /"upgrades":\[\]/);
      // The session is live: CONNECT with a token is acknowledged.
      c.s.write(clientFrame(`40${JSON.stringify({ token })}`));
      await expect101(c, key, (f) => f.some((x) => x.text.startsWith('40{"sid":"')), 'CONNECT ack');
      c.s.destroy();
    });

    await t.test('a head and the first frame in one write: the frame reaches the session', async () => {
      const c = await rawConn(gw.port);
      const key = crypto.randomBytes(16).toString('base64');
      c.s.write(Buffer.concat([Buffer.from(wsHead(key)), clientFrame(`40${JSON.stringify({ token })}`)]));
      const frames = await expect101(c, key, (f) => hasOpen(f) && f.some((x) => x.text.startsWith('40{"sid":"')), 'open + CONNECT ack');
      assert.ok(hasOpen(frames), 'the open packet comes first');
      c.s.destroy();
    });

    await t.test('credentials from the head (Authorization, ?token=) are used', async () => {
      for (const variant of ['header', 'query']) {
        const c = await rawConn(gw.port);
        const key = crypto.randomBytes(16).toString('base64');
        const path = `/socket.io/?EIO=4&transport=websocket${variant === 'query' ? `&token=${encodeURIComponent(token)}` : ''}`;
        const extra = variant === 'header' ? `Authorization: Bearer ${token}\r\n` : '';
        c.s.write(Buffer.concat([Buffer.from(wsHead(key, { path, extra })), clientFrame('40')]));
        await expect101(c, key, (f) => f.some((x) => x.text.startsWith('40{"sid":"')), `CONNECT ack (${variant})`);
        c.s.destroy();
      }
    });

    await t.test('non-upgrade requests reach libmicrohttpd with keep-alive, and a later upgrade works', async () => {
      const c = await rawConn(gw.port);
      const req = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
      c.s.write(req);
      await c.until((b) => /"status":"ok"/.test(b.toString()), 5000, 'first answer');
      assert.match(c.buf.toString(), /^HTTP\/1\.1 200 /);
      assert.match(c.buf.toString(), /Keep-Alive: timeout=/i);
      c.buf = Buffer.alloc(0);
      // two pipelined requests on the same connection
      c.s.write(req + req);
      await c.until((b) => (b.toString().match(/"status":"ok"/g) || []).length === 2, 5000, 'two pipelined answers');
      c.buf = Buffer.alloc(0);
      // an upgrade on the kept-alive connection (libmicrohttpd's path)
      const key = crypto.randomBytes(16).toString('base64');
      c.s.write(Buffer.concat([Buffer.from(wsHead(key)), clientFrame(`40${JSON.stringify({ token })}`)]));
      await expect101(c, key, (f) => hasOpen(f) && f.some((x) => x.text.startsWith('40{"sid":"')), 'upgrade after keep-alive', { fast: false });
      c.s.destroy();
    });

    await t.test('an upgrade the engine refuses is answered by the engine through libmicrohttpd', async () => {
      const c = await rawConn(gw.port);
      const key = crypto.randomBytes(16).toString('base64');
      c.s.write(wsHead(key, { path: '/socket.io/?EIO=3&transport=websocket' }));
      await c.until((b) => /\r\n\r\n[\s\S]*\}/.test(b.toString()), 5000, '400 answer');
      assert.match(c.buf.toString(), /^HTTP\/1\.1 400 /);
      assert.match(c.buf.toString(), /"code":5/);
      c.s.destroy();
      // an unknown route, as an upgrade head: 404 from the route table
      const d = await rawConn(gw.port);
      d.s.write(wsHead(key, { path: '/nope' }));
      await d.until((b) => /^HTTP\/1\.1 404 /.test(b.toString()), 5000, '404 answer');
      d.s.destroy();
    });

    await t.test('a head that never completes is closed after REQUEST_TIMEOUT_MS with a 408', async () => {
      const c = await rawConn(gw.port);
      const t0 = Date.now();
      c.s.write('GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      // one header byte every 100 ms: never idle, never complete
      const dribble = setInterval(() => { if (!c.closed) c.s.write('X'); }, 100);
      try {
        await c.closedP(5000);
      } finally {
        clearInterval(dribble);
      }
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 700, `closed after ${elapsed} ms, before the timeout`);
      assert.ok(elapsed < 3000, `closed after ${elapsed} ms`);
      assert.match(c.buf.toString(), /^HTTP\/1\.1 408 /);
    });
  } finally {
    await gw.stop();
  }
});

test('accept loop: MAX_CONNECTIONS counts connections waiting for their head', { timeout: 30000 }, async () => {
  const gw = await startGateway({ env: { MAX_CONNECTIONS: '4', REQUEST_TIMEOUT_MS: '20000' } });
  try {
    // Connections libmicrohttpd served and closed give their slots back: after 20 of them,
    // three waiting heads and one request still fit in four.
    for (let i = 0; i < 20; i++) {
      const r = await rawConn(gw.port);
      r.s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      await r.closedP(5000);
      assert.match(r.buf.toString(), /^HTTP\/1\.1 200 /);
    }
    // A waiting head has sent its first bytes: a connection that sent nothing is held by the
    // kernel (TCP_DEFER_ACCEPT) and takes no slot.
    const waiting = async () => { const r = await rawConn(gw.port); r.s.write('G'); return r; };
    {
      const held = [];
      for (let i = 0; i < 3; i++) held.push(await waiting());
      const r = await rawConn(gw.port);
      r.s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      await r.until((b) => /"status":"ok"/.test(b.toString()), 5000, 'an answer with three heads waiting');
      await r.closedP(5000);
      for (const x of held) x.s.destroy();
    }
    const idle = [];
    for (let i = 0; i < 4; i++) idle.push(await waiting());
    // The fifth connects (kernel backlog) but is not served while four wait in the acceptor.
    const c = await rawConn(gw.port);
    c.s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    await assert.rejects(c.until((b) => b.length > 0, 400, 'an answer at the limit'), /timed out/);
    idle[0].s.destroy();
    await c.until((b) => /"status":"ok"/.test(b.toString()), 5000, 'the answer once a slot is free');
    for (const x of idle) x.s.destroy();
    c.s.destroy();
  } finally {
    await gw.stop();
  }
});
