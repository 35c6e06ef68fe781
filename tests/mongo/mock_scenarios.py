#!/usr/bin/python3
"""Wire-level tests of the MongoDB backend of presence-gateway, with mockupdb.

mockupdb plays the MongoDB server: each scenario starts tests/unit/store_mongo's harness
program against it, receives every command the backend sends, asserts it exactly (command,
collection, database, statements, dates) and scripts the reply. The harness prints one line
per step result, which the scenario checks too.

usage: mock_scenarios.py HARNESS MODE SCENARIO
  MODE      "backend" (the harness calls store__mongo_ops) or "frontend" (store_open, the
            batching writer and its retries)
  SCENARIO  indexes | presence | bulk | zombies | reconcile | retry | conflict_free

Run it with /usr/bin/python3: Debian's python3-mockupdb lives in its dist-packages.
Exit status 0 on success, 1 on a failed assertion, 77 (skip) when mockupdb is missing.
"""
import datetime
import queue
import subprocess
import sys
import threading
import time

try:
    from bson import ObjectId
    from mockupdb import MockupDB, OpMsg
except ImportError as e:  # pragma: no cover
    print('skipped: python3-mockupdb not importable (%s); run with /usr/bin/python3' % e)
    sys.exit(77)

DB = 'gwtest'
STEP_TIMEOUT = 15  # seconds: every wait is bounded


def hello_reply(req):
    return req.ok({'ismaster': True, 'isWritablePrimary': True, 'helloOk': True,
                   'minWireVersion': 0, 'maxWireVersion': 17,
                   'maxBsonObjectSize': 16777216, 'maxMessageSizeBytes': 48000000,
                   'maxWriteBatchSize': 100000, 'logicalSessionTimeoutMinutes': 30})


def background(req):
    """Answers the handshakes, heartbeats and endSessions; queues everything else."""
    name = (req.command_name or '').lower()
    if name in ('ismaster', 'hello'):
        return hello_reply(req)
    if name == 'endsessions':
        return req.ok()
    return False


def start_server(port=None):
    server = MockupDB(port=port, auto_ismaster=False, request_timeout=STEP_TIMEOUT)
    server.autoresponds(background)
    return server, server.run()


def dt(ms):
    """A BSON date as pymongo decodes it: a naive UTC datetime with millisecond precision."""
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)


def oid(k):
    return ObjectId('%024x' % k)


class Harness:
    """The C harness as a child process; its stdout and stderr are read by threads."""

    def __init__(self, path, url, steps):
        self.proc = subprocess.Popen([path, url] + [str(s) for s in steps],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip('\n'))
        self.lines.put(None)

    def _read_err(self):
        for line in self.proc.stderr:
            self.err.append(line)

    def expect(self, prefix, timeout=STEP_TIMEOUT):
        """Waits for the next output line; asserts it starts with prefix; returns it."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError('harness printed nothing for %ss, expected %r'
                                     % (timeout, prefix))
            # Enqueue acknowledgements matter only to the scenarios that wait for them.
            if line is None or not line.startswith('queued ') or prefix.startswith('queued'):
                break
        if line is None or not line.startswith(prefix):
            raise AssertionError('harness printed %r, expected %r\nstderr:\n%s'
                                 % (line, prefix, ''.join(self.err)))
        return line

    def go(self):
        """Releases a "wait" step."""
        self.proc.stdin.write('go\n')
        self.proc.stdin.flush()

    def finish(self):
        self.expect('closed 0')
        try:
            rc = self.proc.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError('harness did not exit')
        if rc != 0:
            raise AssertionError('harness exited with %d\nstderr:\n%s' % (rc, ''.join(self.err)))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def expect_equal(what, got, want):
    if got != want:
        raise AssertionError('%s:\n  got  %r\n  want %r' % (what, got, want))


def receive_command(server, name, coll):
    pattern = OpMsg(name, coll) if coll else OpMsg(name)
    req = server.receives(pattern, timeout=STEP_TIMEOUT)
    expect_equal('%s database' % name, req['$db'], DB)
    return req


INDEXES = {
    'User': [
        {'key': {'isOnline': 1}, 'name': 'isOnline_1'},
        {'key': {'lastActiveAt': 1}, 'name': 'lastActiveAt_1'},
        {'key': {'isOnline': 1, 'lastActiveAt': 1}, 'name': 'isOnline_1_lastActiveAt_1'},
        {'key': {'username': 1}, 'name': 'username_1', 'unique': True},
    ],
    'AnonymousParticipant': [
        {'key': {'isOnline': 1}, 'name': 'isOnline_1'},
        {'key': {'lastActiveAt': 1}, 'name': 'lastActiveAt_1'},
        {'key': {'isOnline': 1, 'lastActiveAt': 1}, 'name': 'isOnline_1_lastActiveAt_1'},
        {'key': {'sessionToken': 1}, 'name': 'sessionToken_1', 'unique': True},
        {'key': {'conversationId': 1}, 'name': 'conversationId_1'},
    ],
    'ConversationMember': [
        {'key': {'userId': 1}, 'name': 'userId_1'},
        {'key': {'conversationId': 1}, 'name': 'conversationId_1'},
        {'key': {'conversationId': 1, 'userId': 1}, 'name': 'conversationId_1_userId_1',
         'unique': True},
    ],
}


def expect_indexes(server, h):
    """The three createIndexes commands sent at open, in order, answered; then "open 0"."""
    for coll, specs in INDEXES.items():
        req = receive_command(server, 'createIndexes', coll)
        got = [dict((k, dict(v) if k == 'key' else v) for k, v in s.items())
               for s in req['indexes']]
        expect_equal('createIndexes %s indexes' % coll, got, specs)
        # Key order matters for a compound index: compare it as a list too.
        for g, s in zip(req['indexes'], specs):
            expect_equal('key order of %s' % s['name'], list(g['key'].keys()), list(s['key'].keys()))
        req.ok(createdCollectionAutomatically=True, numIndexesBefore=1,
               numIndexesAfter=1 + len(specs))
    h.expect('open 0')


def statement(q, u):
    return {'q': q, 'u': u}


def clean(stmts):
    """The statements as plain dicts, without libmongoc's explicit defaults (upsert false,
    multi false), which a server treats as absent."""
    out = []
    for s in stmts:
        d = dict(s)
        for k in ('upsert', 'multi'):
            if d.get(k) is False:
                del d[k]
        out.append(d)
    return out


def expect_update(server, coll, stmts, reply_n=None):
    req = receive_command(server, 'update', coll)
    expect_equal('update %s ordered' % coll, req.doc.get('ordered'), False)
    expect_equal('update %s statements' % coll, clean(req['updates']), stmts)
    return req


# --- scenarios -------------------------------------------------------------------------------

def sc_indexes(server, url, harness, mode):
    h = Harness(harness, url, ['ping'])
    try:
        expect_indexes(server, h)
        req = receive_command(server, 'ping', None)
        expect_equal('ping command', req['ping'], 1)
        req.ok()
        h.expect('ping 1')
        h.finish()
    finally:
        h.kill()


T1, T2, T3, T4 = 1700000000123, 1700000060456, 1700000120789, 1700000180000
U1, A1 = '%024x' % 0xa1, '%024x' % 0xb2


def sc_presence(server, url, harness, mode):
    """The update of a connect, a disconnect and a throttled activity, for a user and for an
    anonymous participant."""
    h = Harness(harness, url, ['online', U1, 0, T1, 'flush',
                               'offline', U1, 0, T2, 'flush',
                               'activity', U1, 0, T3, 'flush',
                               'online', A1, 1, T4, 'flush'])
    try:
        expect_indexes(server, h)
        q = {'_id': ObjectId(U1)}
        expect_update(server, 'User', [statement(q, {'$set': {
            'isOnline': True, 'lastActiveAt': dt(T1)}})]).ok(n=1, nModified=1)
        h.expect('flush 0')
        expect_update(server, 'User', [statement(q, {'$set': {
            'isOnline': False, 'lastSeen': dt(T2)}})]).ok(n=1, nModified=1)
        h.expect('flush 0')
        expect_update(server, 'User', [statement(q, {'$set': {
            'lastActiveAt': dt(T3)}})]).ok(n=1, nModified=1)
        h.expect('flush 0')
        expect_update(server, 'AnonymousParticipant', [statement({'_id': ObjectId(A1)}, {'$set': {
            'isOnline': True, 'lastActiveAt': dt(T4)}})]).ok(n=1, nModified=1)
        line = h.expect('flush 0')
        if mode == 'backend':
            expect_equal('rows of the last batch', line, 'flush 0 1')
        else:
            expect_equal('rows written in total', line, 'flush 0 4')
        h.finish()
    finally:
        h.kill()


def sc_bulk(server, url, harness, mode):
    """100 activity updates queued together go out as ONE unordered update command of 100
    statements; users and anonymous participants as one command per collection."""
    n = 100
    # Front end: the first write is held unanswered while the others are queued, so the
    # writer is busy and must take them as one batch, whatever its gathering delay.
    if mode == 'backend':
        steps = ['activity', U1, 0, T1, 'flush']
    else:
        steps = ['activity', U1, 0, T1, 'wait']
    steps += ['activity-many', n, 0, T2, 'online', A1, 1, T3, 'flush']
    h = Harness(harness, url, steps)
    try:
        expect_indexes(server, h)
        h.expect('queued activity')
        first = expect_update(server, 'User', [statement({'_id': ObjectId(U1)}, {'$set': {
            'lastActiveAt': dt(T1)}})])
        if mode == 'backend':
            first.ok(n=1, nModified=1)
            h.expect('flush 0 1')
        else:
            h.expect('waiting')
            h.go()
        h.expect('queued activity-many')
        h.expect('queued online')
        if mode != 'backend':
            first.ok(n=1, nModified=1)
        want = [statement({'_id': oid(k)}, {'$set': {'lastActiveAt': dt(T2)}})
                for k in range(1, n + 1)]
        req = expect_update(server, 'User', want)
        expect_equal('statements in the bulk', len(req['updates']), n)
        req.ok(n=n, nModified=n)
        expect_update(server, 'AnonymousParticipant', [statement({'_id': ObjectId(A1)}, {'$set': {
            'isOnline': True, 'lastActiveAt': dt(T3)}})]).ok(n=1, nModified=1)
        line = h.expect('flush 0')
        if mode == 'backend':
            expect_equal('rows of the bulk', line, 'flush 0 %d' % (n + 1))
        else:
            expect_equal('rows written in total', line, 'flush 0 %d' % (n + 2))
        h.finish()
    finally:
        h.kill()


CUTOFF = 1700000300000


def person_doc(k, username, anonymous, last_active):
    d = {'_id': oid(k), 'username': username, 'isActive': True, 'isOnline': True,
         'lastSeen': None, 'lastActiveAt': dt(last_active) if last_active else None}
    if anonymous:
        d.update(conversationId=oid(0xc0), sessionToken='t%d' % k, joinedAt=dt(T1))
    else:
        d.update(displayName=None, firstName=None, lastName=None, email=None, avatar=None,
                 role='USER', createdAt=dt(T1))
    return d


def sc_zombies(server, url, harness, mode):
    """The zombie query: its filter, its hint, on both collections, and the persons read back."""
    h = Harness(harness, url, ['zombies', CUTOFF])
    try:
        expect_indexes(server, h)
        want_filter = {'isOnline': True, '$or': [{'lastActiveAt': {'$lt': dt(CUTOFF)}},
                                                 {'lastActiveAt': None}]}
        want_hint = {'isOnline': 1, 'lastActiveAt': 1}
        batches = {
            'User': [person_doc(1, 'alice', False, T1), person_doc(2, 'bob', False, 0)],
            'AnonymousParticipant': [person_doc(3, 'guest', True, T2)],
        }
        for coll in ('User', 'AnonymousParticipant'):
            req = receive_command(server, 'find', coll)
            expect_equal('zombie filter on %s' % coll, req['filter'], want_filter)
            expect_equal('zombie hint on %s' % coll, dict(req['hint']), want_hint)
            expect_equal('hint key order', list(req['hint'].keys()), ['isOnline', 'lastActiveAt'])
            req.ok(cursor={'id': 0, 'ns': '%s.%s' % (DB, coll), 'firstBatch': batches[coll]})
        h.expect('zombies 0 3')
        got = sorted([h.expect('zombie '), h.expect('zombie '), h.expect('zombie ')])
        expect_equal('zombies read back', got, sorted([
            'zombie %024x 0 alice %d' % (1, T1),
            'zombie %024x 0 bob 0' % 2,
            'zombie %024x 1 guest %d' % (3, T2),
        ]))
        h.finish()
    finally:
        h.kill()


def sc_reconcile(server, url, harness, mode):
    """Startup reconciliation: one pipeline update_many per collection."""
    now = 1700000400000
    h = Harness(harness, url, ['reconcile', now])
    try:
        expect_indexes(server, h)
        want = [{'q': {'isOnline': True},
                 'u': [{'$set': {'lastSeen': {'$ifNull': ['$lastActiveAt', dt(now)]},
                                 'isOnline': False}}],
                 'multi': True}]
        n = {'User': 3, 'AnonymousParticipant': 2}
        for coll in ('User', 'AnonymousParticipant'):
            req = receive_command(server, 'update', coll)
            expect_equal('reconcile on %s' % coll, clean(req['updates']), want)
            req.ok(n=n[coll], nModified=n[coll])
        h.expect('reconciled 0 5')
        h.finish()
    finally:
        h.kill()


def sc_retry(server, url, harness, mode):
    """The server drops the connection in the middle of a batch, goes away, and comes back on
    the same port: the same update is sent again and the write is not lost."""
    port = server.port
    want = [statement({'_id': ObjectId(U1)}, {'$set': {'isOnline': True,
                                                       'lastActiveAt': dt(T1)}})]
    if mode == 'backend':
        steps = ['online', U1, 0, T1, 'flush', 'wait', 'flush', 'wait', 'flush']
    else:
        steps = ['online', U1, 0, T1, 'flush']
    h = Harness(harness, url, steps)
    try:
        expect_indexes(server, h)
        expect_update(server, 'User', want).hangup()
        if mode == 'backend':
            h.expect('flush -4')           # STORE_ERR_UNAVAILABLE: a network error
        server.stop()
        if mode == 'backend':
            h.expect('waiting')
            h.go()
            t0 = time.monotonic()
            h.expect('flush -4')           # refused: fails fast, within the 2 s timeouts
            elapsed = time.monotonic() - t0
            if elapsed > 5:
                raise AssertionError('a call to a stopped server took %.1f s' % elapsed)
        else:
            # Hold the outage across a few of the writer's retries (100 ms doubling).
            time.sleep(1.5)
        server, _ = start_server(port)
        try:
            if mode == 'backend':
                h.expect('waiting')
                h.go()
            expect_update(server, 'User', want).ok(n=1, nModified=1)
            h.expect('flush 0 1')
            h.finish()
        finally:
            server.stop()
    finally:
        h.kill()


SCENARIOS = {
    'indexes': sc_indexes,
    'presence': sc_presence,
    'bulk': sc_bulk,
    'zombies': sc_zombies,
    'reconcile': sc_reconcile,
    'retry': sc_retry,
}


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ('backend', 'frontend') or sys.argv[3] not in SCENARIOS:
        print(__doc__, file=sys.stderr)
        return 2
    harness, mode, name = sys.argv[1:]
    server, port = start_server()
    url = 'mongodb://127.0.0.1:%d/%s' % (port, DB)
    try:
        SCENARIOS[name](server, url, harness, mode)
    except AssertionError as e:
        print('FAIL %s (%s): %s' % (name, mode, e))
        return 1
    finally:
        server.stop()
    print('PASS %s (%s)' % (name, mode))
    return 0


if __name__ == '__main__':
    sys.exit(main())
