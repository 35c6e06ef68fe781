#!/usr/bin/python3
"""Runs a test program against a MongoDB server, with its URL in STORE_TEST_URL.

usage: with_mongo.py minimongo PROGRAM [ARG...]
       with_mongo.py env PROGRAM [ARG...]

minimongo  starts minimongo (a MongoDB wire server in Node.js with MongoDB's query and update
           semantics) from the folder named by MINIMONGO_DIR: the folder is copied to a
           temporary directory, `npm ci --omit=dev` installs it there, `node server.js --port 0`
           serves on a free loopback port, and the program gets
           STORE_TEST_URL=mongodb://127.0.0.1:PORT/presence_test. The server is stopped at the end.
           After the run, its command log must show presence writes sent as unordered `update`
           commands (the backend's bulk writes).
env        uses MONGODB_TEST_URI (a real server) as STORE_TEST_URL.

Exit status: the program's, or 77 (skipped, with the reason printed) when MINIMONGO_DIR or
MONGODB_TEST_URI is not set, 1 when the server cannot be started.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
READY_TIMEOUT = 20
RUN_TIMEOUT = 240


def run_program(argv, url):
    env = dict(os.environ, STORE_TEST_URL=url)
    try:
        return subprocess.run(argv, env=env, timeout=RUN_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        print('FAIL: %s did not finish within %d s' % (argv[0], RUN_TIMEOUT))
        return 1


def start_minimongo(src, work):
    app = os.path.join(work, 'minimongo')
    shutil.copytree(src, app, ignore=shutil.ignore_patterns('node_modules'))
    npm = subprocess.run(['npm', 'ci', '--omit=dev', '--no-audit', '--no-fund'], cwd=app,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    if npm.returncode != 0:
        raise RuntimeError('npm ci failed in the minimongo copy:\n' + npm.stdout)
    log = os.path.join(work, 'commands.log')
    proc = subprocess.Popen(['node', 'server.js', '--port', '0', '--log', log], cwd=app,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found = []

    def read():
        for line in proc.stdout:
            if line.startswith('READY ') and not found:
                found.append(line.split()[1])

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not found:
        if proc.poll() is not None:
            raise RuntimeError('minimongo exited with %s: %s' % (proc.returncode, proc.stderr.read()))
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError('minimongo printed no READY line in %d s' % READY_TIMEOUT)
        time.sleep(0.05)
    return proc, found[0], log


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_bulk_writes(log):
    """Presence writes reached the server as unordered update commands on User."""
    n = 0
    with open(log) as f:
        for line in f:
            rec = json.loads(line)
            cmd = rec.get('cmd', {})
            if (rec.get('command') == 'update' and rec.get('collection') == 'User'
                    and cmd.get('ordered') is False):
                n += 1
    if n == 0:
        print('FAIL: no unordered update command on User in the command log')
        return False
    print('minimongo saw %d unordered update commands on User' % n)
    return True


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ('minimongo', 'env'):
        print(__doc__, file=sys.stderr)
        return 2
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == 'env':
        uri = os.environ.get('MONGODB_TEST_URI', '')
        if not uri:
            print('skipped: MONGODB_TEST_URI not set')
            return SKIP
        return run_program(argv, uri)

    src = os.environ.get('MINIMONGO_DIR', '')
    if not src:
        print('skipped: MINIMONGO_DIR not set (the folder of minimongo, a MongoDB wire server)')
        return SKIP
    if shutil.which('node') is None or shutil.which('npm') is None:
        print('skipped: node and npm are needed to run minimongo')
        return SKIP
    work = tempfile.mkdtemp(prefix='pg-minimongo-')
    proc = None
    try:
        try:
            proc, uri, log = start_minimongo(src, work)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            print('FAIL: cannot start minimongo: %s' % e)
            return 1
        print('minimongo at %s' % uri)
        rc = run_program(argv, uri + '/presence_test')
        if rc == 0 and not check_bulk_writes(log):
            rc = 1
        return rc
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
