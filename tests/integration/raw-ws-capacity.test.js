'use strict';
// Idle capacity of the Socket.IO engine (SPEC §5 "Idle memory", "Capacity"): opens N
// authenticated raw WebSocket sessions (distinct users, conversations of 10), keeps them idle
// (answering pings), and reports the gateway's RSS growth per connection.
//
// By default a small N runs as a regular test (every session connects, answers pings, and the
// gauges return to 0 after the close). The measurement of the SPEC is the same file by hand,
// with a release build and N near the open-files limit:
//   GATEWAY_BIN=<release build>/gateway/presence-gateway SIO_CAPACITY_N=19500 \
//     SIO_CAPACITY_MAX_RSS_PER_CONN=1024 node --test raw-ws-capacity.test.js
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const WebSocket = require('ws');
const { startGateway, userToken, adminToken, waitUntil, withTimeout, metric } = require('./helpers');

const N = Number(process.env.SIO_CAPACITY_N || 300);
const MAX_RSS = Number(process.env.SIO_CAPACITY_MAX_RSS_PER_CONN || 0);
const ROOM = 10;

function rssBytes(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]) * 1024;
}

// Runs fn over items with at most `width` in flight.
async function pool(items, width, fn) {
  let i = 0;
  const workers = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (i < items.length) { const k = i++; await fn(items[k], k); }
  });
  await Promise.all(workers);
}

async function post(gw, path, body) {
  const r = await gw.api('POST', path, { token: adminToken(), body });
  if (r.status !== 201) throw new Error(`${path}: ${r.status} ${r.text}`);
  return r.body;
}

// One idle Socket.IO session over a raw WebSocket: open, CONNECT with a token, pongs.
function session(gw, token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
    ws.pings = 0;
    ws.on('message', (d, bin) => {
      if (bin) return;
      const s = d.toString();
      if (s === '2') { ws.pings++; ws.send('3'); return; }
      if (s[0] === '0') { ws.send(`40${JSON.stringify({ token })}`); return; }
      if (s.startsWith('40')) resolve(ws);
      if (s.startsWith('44')) reject(new Error(`refused: ${s}`));
    });
    ws.on('error', reject);
    ws.on('close', () => reject(new Error('closed before CONNECT')));
  });
}

test(`${N} idle authenticated connections`, { timeout: 600000 }, async (t) => {
  const gw = await startGateway({
    env: {
      LOG_LEVEL: 'info', // the READY line is an info line
      PING_INTERVAL_MS: N > 1000 ? '25000' : '500',
      PING_TIMEOUT_MS: N > 1000 ? '10000' : '2000',
    },
  });
  const sockets = [];
  try {
    const users = new Array(N);
    await pool([...Array(N).keys()], 32, async (k) => {
      users[k] = await post(gw, '/api/admin/users', { username: `cap${process.pid}u${k}` });
    });
    const convs = Math.ceil(N / ROOM);
    await pool([...Array(convs).keys()], 32, async (c) => {
      const conv = await post(gw, '/api/admin/conversations', {});
      for (let k = c * ROOM; k < Math.min(N, (c + 1) * ROOM); k++) {
        await post(gw, `/api/admin/conversations/${conv.id}/members`, { userId: users[k].id });
      }
    });
    // Let keep-alive REST connections of the provisioning go, then take the baseline.
    const rss0 = rssBytes(gw.child.pid);
    const t0 = Date.now();
    await pool(users, 200, async (u) => { sockets.push(await session(gw, userToken(u.id))); });
    const connectMs = Date.now() - t0;
    await waitUntil(async () => (await metric(gw, 'meeshy_connected_sockets')) === N, { timeoutMs: 30000, what: 'all sockets counted' });
    assert.equal(await metric(gw, 'meeshy_online_users'), N);
    // Idle: let the loops trim the memory of the burst (they do within ~1 s of going idle).
    await new Promise((r) => setTimeout(r, 2500));
    const rss1 = rssBytes(gw.child.pid);
    const per = (rss1 - rss0) / N;
    t.diagnostic(`connections=${N} connect_ms=${connectMs} rss_before=${(rss0 / 1048576).toFixed(1)}MiB rss_after=${(rss1 / 1048576).toFixed(1)}MiB per_connection=${per.toFixed(0)}B`);
    if (MAX_RSS > 0) assert.ok(per <= MAX_RSS, `${per.toFixed(0)} B per idle connection > ${MAX_RSS}`);
    if (N <= 1000) {
      // Every session answers its pings and stays.
      await waitUntil(() => sockets.every((ws) => ws.pings >= 2), { timeoutMs: 10000, what: 'two pings each' });
      assert.equal(await metric(gw, 'meeshy_connected_sockets'), N);
    }
    const closes = sockets.map((ws) => new Promise((r) => { ws.removeAllListeners('close'); ws.on('close', r); }));
    for (const ws of sockets) ws.close();
    await withTimeout(Promise.all(closes), 60000, 'all closed');
    await waitUntil(async () => (await metric(gw, 'meeshy_connected_sockets')) === 0, { timeoutMs: 30000, what: 'gauge back to 0' });
    assert.equal(await metric(gw, 'meeshy_online_users'), 0);
  } finally {
    for (const ws of sockets) ws.terminate();
    await gw.stop();
    assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/);
  }
});
