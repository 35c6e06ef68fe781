'use strict';
// Hostile bytes after a WebSocket upgrade (SPEC §4 "never a crash and never a leak"): raw TCP
// clients upgrade on /socket.io/, optionally authenticate, then write seeded random frames
// (valid and broken headers, masked and unmasked, fragments, control frames, random Engine.IO
// and Socket.IO text) in random-sized chunks. Each connection must end (closed by the gateway
// or by us after the bytes are out), a well-behaved client must keep working throughout, and
// the gateway must stop cleanly with no sanitizer report.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const crypto = require('node:crypto');
const { io } = require('socket.io-client');
const { startGateway, createUser, userToken, withTimeout } = require('./helpers');

const ROUNDS = Number(process.env.SIO_FUZZ_ROUNDS || 150);

// xorshift32: reproducible runs (the seed is printed).
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 4294967296; };
}

function frame(r, { opcode, payload, fin = true, mask = true, lenOverride }) {
  const len = payload.length;
  const head = [((fin ? 0x80 : 0) | opcode) & 0xff];
  const m = mask ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  const l = lenOverride !== undefined ? lenOverride : len;
  if (l < 126) head.push(m | l);
  else if (l < 65536) { head.push(m | 126); ext = Buffer.from([l >> 8, l & 0xff]); }
  else { head.push(m | 127); ext = Buffer.alloc(8); ext.writeBigUInt64BE(BigInt(l)); }
  const key = Buffer.from([0, 0, 0, 0].map(() => Math.floor(r() * 256)));
  const body = Buffer.from(payload);
  if (mask) for (let i = 0; i < body.length; i++) body[i] ^= key[i % 4];
  return Buffer.concat([Buffer.from(head), ext, mask ? key : Buffer.alloc(0), body]);
}

const TEXTS = ['2', '3', '40', '41', '42', '42[]', '42["echo"]', '421["echo",1]', '43', '44', '45', '451-["x",{"_placeholder":true,"num":0}]',
  '452-', '4', '6', '5', '1', '0', '40/x,', '42/x,["a"]', '42["conversation:join",{"conversationId":"zz"}]',
  '42["conversation:leave",null]', '4999999999999999999999["a"]', '42[{"a":', '42"str"', '4[', '42\u0000', 'x', ''];

function randomPayload(r) {
  const k = r();
  if (k < 0.5) return Buffer.from(TEXTS[Math.floor(r() * TEXTS.length)]);
  if (k < 0.7) return crypto.randomBytes(Math.floor(r() * 64));
  if (k < 0.8) return Buffer.from('42["echo","' + 'x'.repeat(Math.floor(r() * 3000)) + '"]');
  return Buffer.from(TEXTS[Math.floor(r() * TEXTS.length)] + crypto.randomBytes(4).toString('latin1'));
}

function randomFrames(r) {
  const out = [];
  const n = 1 + Math.floor(r() * 6);
  for (let i = 0; i < n; i++) {
    const k = r();
    const payload = randomPayload(r);
    if (k < 0.55) out.push(frame(r, { opcode: 1, payload }));
    else if (k < 0.62) out.push(frame(r, { opcode: 2, payload }));
    else if (k < 0.68) out.push(frame(r, { opcode: 1, payload, fin: false }), frame(r, { opcode: 9, payload: Buffer.from('p') }), frame(r, { opcode: 0, payload: Buffer.from(']') }));
    else if (k < 0.72) out.push(frame(r, { opcode: 1, payload, mask: false }));
    else if (k < 0.76) out.push(frame(r, { opcode: 8, payload: Buffer.from([0x03, 0xe8]) }));
    else if (k < 0.80) out.push(frame(r, { opcode: 9, payload: crypto.randomBytes(200) }));
    else if (k < 0.84) out.push(frame(r, { opcode: 3 + Math.floor(r() * 5), payload }));
    else if (k < 0.88) out.push(frame(r, { opcode: 0, payload }));
    else if (k < 0.92) out.push(frame(r, { opcode: 1, payload, lenOverride: payload.length + 1 + Math.floor(r() * 10) }));
    else if (k < 0.96) out.push(Buffer.from([0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    else out.push(crypto.randomBytes(1 + Math.floor(r() * 40)));
  }
  return Buffer.concat(out);
}

// Upgrades a raw socket; resolves with the socket once the 101 head was read.
function upgrade(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let head = '';
    s.on('error', () => {});
    s.on('connect', () => {
      s.write(`GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const onData = (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        s.off('data', onData);
        if (!head.startsWith('HTTP/1.1 101')) { s.destroy(); reject(new Error(head.split('\r\n')[0])); return; }
        resolve(s);
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed during upgrade')));
  });
}

test(`random frames after the upgrade (${ROUNDS} connections)`, { timeout: 180000 }, async (t) => {
  const seed = Number(process.env.SIO_FUZZ_SEED || Date.now() % 1000000);
  t.diagnostic(`seed ${seed}`);
  const r = rng(seed);
  const gw = await startGateway({ env: { MAX_PAYLOAD_BYTES: '4096', MAX_EVENTS_PER_SEC: '1000', LOG_LEVEL: 'info' } });
  try {
    const u = await createUser(gw, `fuzz${process.pid}`);
    const good = io(gw.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token: userToken(u.id) } });
    await withTimeout(new Promise((res, rej) => { good.once('connect', res); good.once('connect_error', rej); }), 5000, 'good client');
    const token = userToken(u.id);
    for (let round = 0; round < ROUNDS; round += 10) {
      await Promise.all(Array.from({ length: 10 }, async () => {
        const s = await upgrade(gw.port);
        const closed = new Promise((res) => s.once('close', res));
        if (r() < 0.6) s.write(frame(r, { opcode: 1, payload: Buffer.from(`40${JSON.stringify({ token })}`) }));
        let bytes = randomFrames(r);
        while (bytes.length > 0) {
          const n = 1 + Math.floor(r() * Math.min(bytes.length, 300));
          s.write(bytes.subarray(0, n));
          bytes = bytes.subarray(n);
        }
        s.end();
        await withTimeout(closed, 5000, 'the connection ends');
      }));
      const [echo] = await withTimeout(new Promise((res) => good.emit('echo', round, (...a) => res(a))), 5000, 'good client echo');
      assert.equal(echo, round);
    }
    good.close();
    const m = await (await fetch(`${gw.url}/metrics`)).text();
    await withTimeout((async () => {
      for (;;) {
        const t2 = await (await fetch(`${gw.url}/metrics`)).text();
        if (/^meeshy_connected_sockets 0$/m.test(t2)) return;
        await new Promise((res) => setTimeout(res, 20));
      }
    })(), 5000, 'all sockets gone');
    assert.match(m, /meeshy_connected_sockets/);
  } finally {
    const r2 = await gw.stop();
    assert.equal(r2.code, 0, `gateway exit ${r2.code} ${r2.signal}\n${gw.log.slice(-3000)}`);
    assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/, gw.log.slice(-3000));
  }
});
