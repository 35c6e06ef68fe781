'use strict';
// The Node.js peer of presence-gateway's benchmarks: the same flows, written with the official
// `socket.io` server the way a Meeshy-style gateway does them — JWT verified in a Socket.IO
// middleware, rooms per user and per conversation, `user:status` fanned out to the
// conversations' rooms except the person's own, and a throttled REST auth middleware on
// /api/users/me. Its store is in memory (Maps): that favours the peer, since it never waits
// on a database, so ratios measured against it are conservative.
//
// Environment: PORT (default 8100), HOST (127.0.0.1), JWT_SECRET (required),
// ACTIVITY_THROTTLE_MS (60000), PING_INTERVAL_MS (25000), PING_TIMEOUT_MS (10000).
// Prints "READY http://HOST:PORT" once listening.
const http = require('node:http');
const crypto = require('node:crypto');
const jwt = require('jsonwebtoken');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 8100);
const HOST = process.env.HOST || '127.0.0.1';
const SECRET = process.env.JWT_SECRET;
const THROTTLE_MS = Number(process.env.ACTIVITY_THROTTLE_MS || 60000);
if (!SECRET) {
  console.error('JWT_SECRET is required');
  process.exit(2);
}

const users = new Map(); // id -> user
const usernames = new Set();
const conversations = new Map(); // id -> {id, title, type, members:Set}
const memberships = new Map(); // userId -> Set(conversationId)
const liveSockets = new Map(); // userId -> count
const throttle = new Map(); // userId -> last write ms
let dbWrites = 0;

const objectId = () => crypto.randomBytes(12).toString('hex');
const iso = (ms) => (ms ? new Date(ms).toISOString() : null);

function statusOf(u, now = Date.now()) {
  if (!u.lastActiveAt) return 'offline';
  const idle = now - u.lastActiveAt;
  if (u.isOnline) return idle < 300000 ? 'online' : idle < 1800000 ? 'away' : 'offline';
  return idle < 1800000 ? 'away' : 'offline';
}

function view(u) {
  return {
    id: u.id, username: u.username, displayName: u.displayName || null, isAnonymous: false,
    isOnline: u.isOnline, status: statusOf(u), lastActiveAt: iso(u.lastActiveAt), lastSeen: iso(u.lastSeen),
    role: u.role,
  };
}

function verify(token) {
  try {
    const claims = jwt.verify(token, SECRET, { algorithms: ['HS256'] });
    const id = claims.userId || claims.sub;
    return { id, role: claims.role || 'USER' };
  } catch {
    return null;
  }
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; if (data.length > 1e6) reject(new Error('too large')); });
    req.on('end', () => { try { resolve(data ? JSON.parse(data) : {}); } catch (e) { reject(e); } });
  });
}

// The REST auth middleware with the seed's throttle Map.
function authenticate(req) {
  const h = req.headers.authorization || '';
  const m = /^Bearer (.+)$/i.exec(h);
  if (!m) return null;
  const c = verify(m[1]);
  if (!c) return null;
  const u = users.get(c.id);
  if (u) {
    const now = Date.now();
    const last = throttle.get(u.id) || 0;
    if (now - last >= THROTTLE_MS) {
      u.lastActiveAt = now;
      dbWrites++;
      throttle.set(u.id, now);
    }
  }
  return { claims: c, user: u };
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/healthz') return send(res, 200, { status: 'ok' });
  const auth = authenticate(req);
  if (!auth) return send(res, 401, { error: 'unauthorized', message: 'invalid token' });
  const isAdmin = auth.claims.role === 'ADMIN' || auth.claims.role === 'BIGBOSS';
  try {
    if (req.method === 'GET' && url.pathname === '/api/users/me') {
      if (!auth.user) return send(res, 401, { error: 'unauthorized', message: 'unknown user' });
      return send(res, 200, view(auth.user));
    }
    if (!isAdmin) return send(res, 403, { error: 'forbidden', message: 'admin only' });
    if (req.method === 'POST' && url.pathname === '/api/admin/users') {
      const b = await readBody(req);
      if (!b.username) return send(res, 400, { error: 'bad_request', message: 'username required' });
      if (usernames.has(b.username)) return send(res, 409, { error: 'conflict', message: 'username taken' });
      const u = { id: b.id || objectId(), username: b.username, displayName: b.displayName, role: b.role || 'USER',
        isOnline: false, lastActiveAt: 0, lastSeen: 0 };
      users.set(u.id, u);
      usernames.add(u.username);
      return send(res, 201, view(u));
    }
    if (req.method === 'POST' && url.pathname === '/api/admin/conversations') {
      const b = await readBody(req);
      const c = { id: b.id || objectId(), title: b.title || null, type: b.type || 'group', members: new Set() };
      conversations.set(c.id, c);
      return send(res, 201, { id: c.id, title: c.title, type: c.type, members: 0 });
    }
    const mm = /^\/api\/admin\/conversations\/([0-9a-f]{24})\/members$/.exec(url.pathname);
    if (req.method === 'POST' && mm) {
      const b = await readBody(req);
      const c = conversations.get(mm[1]);
      if (!c || !users.has(b.userId)) return send(res, 404, { error: 'not_found', message: 'unknown' });
      const added = c.members.has(b.userId) ? 0 : 1;
      c.members.add(b.userId);
      if (!memberships.has(b.userId)) memberships.set(b.userId, new Set());
      memberships.get(b.userId).add(c.id);
      io.in(`user:${b.userId}`).socketsJoin(`conversation:${c.id}`);
      return send(res, 201, { conversationId: c.id, added, members: c.members.size });
    }
    return send(res, 404, { error: 'not_found', message: 'no route' });
  } catch (e) {
    return send(res, 400, { error: 'bad_request', message: String(e.message || e) });
  }
});

const io = new Server(server, {
  pingInterval: Number(process.env.PING_INTERVAL_MS || 25000),
  pingTimeout: Number(process.env.PING_TIMEOUT_MS || 10000),
  connectTimeout: 45000,
  maxHttpBufferSize: 1e6,
});

function broadcastStatus(u) {
  const rooms = [...(memberships.get(u.id) || [])].map((c) => `conversation:${c}`);
  if (rooms.length === 0) return;
  io.to(rooms).except(`user:${u.id}`).emit('user:status', {
    userId: u.id, username: u.username, isOnline: u.isOnline, isAnonymous: false, status: statusOf(u),
    lastActiveAt: iso(u.lastActiveAt), lastSeen: iso(u.lastSeen),
  });
}

io.use((socket, next) => {
  const token = (socket.handshake.auth && socket.handshake.auth.token) || socket.handshake.query.token;
  const c = token && verify(token);
  const u = c && users.get(c.id);
  if (!u) return next(new Error('Authentication failed'));
  socket.data.user = u;
  next();
});

io.on('connection', (socket) => {
  const u = socket.data.user;
  socket.join(`user:${u.id}`);
  for (const cid of memberships.get(u.id) || []) socket.join(`conversation:${cid}`);
  const n = (liveSockets.get(u.id) || 0) + 1;
  liveSockets.set(u.id, n);
  if (n === 1) {
    u.isOnline = true;
    u.lastActiveAt = Date.now();
    dbWrites++;
    throttle.set(u.id, u.lastActiveAt);
    broadcastStatus(u);
  }
  socket.on('disconnect', () => {
    const left = (liveSockets.get(u.id) || 1) - 1;
    if (left > 0) { liveSockets.set(u.id, left); return; }
    liveSockets.delete(u.id);
    u.isOnline = false;
    u.lastSeen = Date.now();
    dbWrites++;
    broadcastStatus(u);
  });
});

server.listen(PORT, HOST, () => {
  console.log(`READY http://${HOST}:${server.address().port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    io.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
