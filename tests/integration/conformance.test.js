'use strict';
// `presence-gateway --conformance` (SPEC §3 "Conformance mode"): the behaviour the official
// Engine.IO and Socket.IO protocol test suites expect, checked here with our own raw clients
// (fetch and ws) on a free loopback port. The suites themselves are run by hand against
// `--conformance --port 3000` (see the report in the commit history); these tests keep the
// mode from regressing in between.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startGateway, withTimeout, waitUntil } = require('./helpers');

const T = { timeout: 15000 };

// A raw WebSocket that records text and binary messages, and its close.
function raw(gw, pathAndQuery) {
  const ws = new WebSocket(`ws://127.0.0.1:${gw.port}${pathAndQuery}`);
  ws.binaryType = 'nodebuffer';
  ws.msgs = [];
  ws.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  ws.on('message', (data, isBinary) => ws.msgs.push(isBinary ? Buffer.from(data) : data.toString()));
  ws.on('error', () => {});
  ws.opened = withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5000, 'ws open');
  return ws;
}

// Waits until ws holds at least n messages that are not pings; returns them.
async function nonPing(ws, n, what) {
  return waitUntil(() => {
    const m = ws.msgs.filter((x) => x !== '2');
    return m.length >= n ? m : null;
  }, { timeoutMs: 3000, what });
}

describe('conformance mode', () => {
  let gw;
  before(async () => { gw = await startGateway({ args: ['--conformance'] }); });
  after(async () => {
    await gw.stop();
    assert.doesNotMatch(gw.log, /AddressSanitizer|LeakSanitizer|runtime error:/, 'sanitizer report');
  });

  test('the open packet holds exactly the five keys with the suites\' timings', T, async () => {
    for (const p of ['/engine.io/', '/socket.io/']) {
      const r = await fetch(`${gw.url}${p}?EIO=4&transport=polling`);
      assert.equal(r.status, 200);
      const text = await r.text();
      assert.equal(text[0], '0');
      const o = JSON.parse(text.slice(1));
      assert.deepEqual(Object.keys(o).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
      assert.deepEqual(o.upgrades, ['websocket']);
      assert.equal(o.pingInterval, 300);
      assert.equal(o.pingTimeout, 200);
      assert.equal(o.maxPayload, 1000000);
    }
    const ws = raw(gw, '/engine.io/?EIO=4&transport=websocket');
    const [open] = await nonPing(ws, 1, 'open packet');
    assert.deepEqual(JSON.parse(open.slice(1)).upgrades, []);
    ws.close();
  });

  test('/engine.io/ echoes text as text and binary as binary, over polling and WebSocket', T, async () => {
    const r = await fetch(`${gw.url}/engine.io/?EIO=4&transport=polling`);
    const sid = JSON.parse((await r.text()).slice(1)).sid;
    const url = `${gw.url}/engine.io/?EIO=4&transport=polling&sid=${sid}`;
    const post = await fetch(url, { method: 'POST', body: '4hello\x1ebAQIDBA==' });
    assert.equal(post.status, 200);
    assert.equal(await post.text(), 'ok');
    const got = await fetch(url);
    assert.equal(await got.text(), '4hello\x1ebAQIDBA==');

    const ws = raw(gw, '/engine.io/?EIO=4&transport=websocket');
    await nonPing(ws, 1, 'open packet');
    ws.send('4hi there');
    ws.send(Buffer.from([1, 2, 3, 4]));
    const [, text, bin] = await nonPing(ws, 3, 'two echoes');
    assert.equal(text, '4hi there');
    assert.deepEqual([...bin], [1, 2, 3, 4]);
    ws.close();
  });

  test('/socket.io/: namespaces / and /custom, the auth event, message-back and acks with binary', T, async () => {
    const ws = raw(gw, '/socket.io/?EIO=4&transport=websocket');
    await nonPing(ws, 1, 'open packet');
    ws.send('40{"token":"123"}');
    let m = await nonPing(ws, 3, 'CONNECT ack and auth');
    assert.match(m[1], /^40\{"sid":"[^"]+"\}$/);
    assert.equal(m[2], '42["auth",{"token":"123"}]');
    ws.send('40/custom,');
    m = await nonPing(ws, 5, 'custom ack and auth');
    assert.match(m[3], /^40\/custom,\{"sid":"[^"]+"\}$/);
    assert.equal(m[4], '42/custom,["auth",{}]');
    ws.send('40/random');
    m = await nonPing(ws, 6, 'invalid namespace');
    assert.equal(m[5], '44/random,{"message":"Invalid namespace"}');
    ws.send('41/custom');
    ws.send('42["message",1,"2",{"3":[true]}]');
    m = await nonPing(ws, 7, 'message-back');
    assert.equal(m[6], '42["message-back",1,"2",{"3":[true]}]');
    ws.send('42456["message-with-ack",1,"2",{"3":[false]}]');
    m = await nonPing(ws, 8, 'ack');
    assert.equal(m[7], '43456[1,"2",{"3":[false]}]');
    ws.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    ws.send(Buffer.from([1, 2, 3]));
    ws.send(Buffer.from([4, 5, 6]));
    m = await nonPing(ws, 11, 'binary ack');
    assert.equal(m[8], '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual([...m[9]], [1, 2, 3]);
    assert.deepEqual([...m[10]], [4, 5, 6]);
    // In /custom nothing answers; the session stays up and keeps pinging.
    ws.send('42/custom,["message","x"]');
    await waitUntil(() => ws.msgs.filter((x) => x === '2').length >= 1, { timeoutMs: 2000, what: 'a ping' });
    assert.equal(ws.msgs.filter((x) => x !== '2').length, 11, 'nothing else was sent');
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.send('4abc');
    await withTimeout(ws.closed, 3000, 'close on an invalid packet');
  });

  test('deadlines: a silent WebSocket is dropped after pingInterval + pingTimeout, an expired polling sid is refused at once', T, async () => {
    const t0 = Date.now();
    const ws = raw(gw, '/socket.io/?EIO=4&transport=websocket');
    await withTimeout(ws.closed, 3000, 'ping timeout');
    assert.ok(Date.now() - t0 < 1500, `closed after ${Date.now() - t0} ms`);
    const r = await fetch(`${gw.url}/engine.io/?EIO=4&transport=polling`);
    const sid = JSON.parse((await r.text()).slice(1)).sid;
    await new Promise((res) => setTimeout(res, 500)); // exactly pingInterval + pingTimeout, as the suite does
    const g = await fetch(`${gw.url}/engine.io/?EIO=4&transport=polling&sid=${sid}`);
    assert.equal(g.status, 400);
    await g.text();
  });

  test('the product routes are not served', T, async () => {
    const r = await fetch(`${gw.url}/api/users/me`);
    assert.equal(r.status, 404);
    await r.text();
  });
});
