"""Tests of the eventwire command, driven as a user drives it: processes,
their exit codes, their stdout and stderr lines. Synchronises on output
lines (a listener's ready line, a replay's progress), never on sleeps.

  cli_test.py EVENTWIRE PEER usage RABBITMQ_URL
  cli_test.py EVENTWIRE PEER bench
  cli_test.py EVENTWIRE PEER roundtrip URL
  cli_test.py EVENTWIRE PEER dlq URL
"""
import base64
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

EW, PEER, CASE = sys.argv[1], sys.argv[2], sys.argv[3]
ARGS = sys.argv[4:]
UNIQUE = f"cli{os.getpid()}x{int(time.time() * 1000) % 100000000}"
failures = []


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(*args, stdin=None, timeout=60):
    p = subprocess.run([EW, *args], input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class Proc:
    """A process whose stdout and stderr lines are read as they come."""

    def __init__(self, argv):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ, "out")
        self.sel.register(self.p.stderr, selectors.EVENT_READ, "err")
        self.buf = {"out": b"", "err": b""}
        self.out, self.err = [], []
        self.closed = set()

    def pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                self.sel.unregister(key.fileobj)
                self.closed.add(key.data)
                continue
            *whole, self.buf[key.data] = (self.buf[key.data] + data).split(b"\n")
            (self.out if key.data == "out" else self.err).extend(
                w.decode(errors="replace") for w in whole)

    def wait_for(self, cond, what, timeout=60):
        """Reads until cond() holds; fails after timeout with what it saw."""
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0 or len(self.closed) == 2:
                if cond():
                    return
                fail(f"{what}: not seen within {timeout} s from {self.argv[:3]}; "
                     f"exit {self.p.poll()}; stdout {self.out[-5:]}; stderr {self.err[-5:]}")
            self.pump(min(left, 1.0))

    def finish(self, timeout=60):
        deadline = time.monotonic() + timeout
        while len(self.closed) < 2 and time.monotonic() < deadline:
            self.pump(1.0)
        try:
            return self.p.wait(max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.p.kill()
            fail(f"{self.argv[:3]} did not end within {timeout} s; stderr {self.err[-5:]}")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def one_error_line(code, out, err, want_code, pattern, what):
    lines = [l for l in err.splitlines() if l.strip()]
    check(code == want_code, f"{what}: exit {code}, expected {want_code}; stderr {err!r}")
    check(len(lines) == 1, f"{what}: expected one stderr line, got {lines}")
    check(re.search(pattern, lines[0]), f"{what}: stderr {lines[0]!r} does not match {pattern!r}")
    check(out == "", f"{what}: unexpected stdout {out!r}")
    print(f"ok: {what}: exit {code}: {lines[0]}", flush=True)


# ---------------------------------------------------------------------------

def case_usage(rabbit_url):
    code, out, err = run("--help")
    check(code == 0 and "Usage: eventwire <command>" in out and "Exit codes" in out,
          f"eventwire --help: exit {code}, {out!r}")
    for cmd in ("send", "listen", "dlq", "bench"):
        code, out, err = run(cmd, "--help")
        check(code == 0 and f"Usage: eventwire {cmd}" in out and "Exit codes: 0 ok" in out
              and "Example:" in out and err == "", f"{cmd} --help: exit {code}, {err!r}")
    print("ok: --help on every subcommand", flush=True)
    ev = UNIQUE + "usage"
    code, out, err = run()
    check(code == 2 and "Usage" in err, f"no command: exit {code}")
    one_error_line(*run("frobnicate"), 2, r"unknown command 'frobnicate'", "unknown command")
    one_error_line(*run("send", "local://", ev, '{"a":1,}'), 2,
                   r"^eventwire send: bad JSON at line 1, column 8 \(byte 8\)", "bad JSON")
    one_error_line(*run("send", "local://", ev, '{"a":\n tru}'), 2,
                   r"bad JSON at line 2, column", "bad JSON on line 2")
    one_error_line(*run("send", "local://", ev, '[1,2]'), 2,
                   r"the event must be a JSON object", "JSON that is not an object")
    one_error_line(*run("send", "local://", ev, "-", stdin=b'{"a": }'), 2,
                   r"bad JSON at line 1", "bad JSON from stdin")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--format", "xml"), 2,
                   r"unknown event format 'xml' \(msgpack or json\)", "unknown event format")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--bogus"), 2,
                   r"unknown option --bogus", "unknown option")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--format"), 2,
                   r"option --format needs a value", "option without its value")
    one_error_line(*run("send", "local://", ev), 2, r"expected URL EVENT JSON",
                   "missing argument")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--header", "novalue"), 2,
                   r"--header 'novalue': expected key=value", "header without =")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--header", "ew-x=1"), 2,
                   r"ew- are the library's own", "reserved header")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--count", "0"), 2,
                   r"--count: '0' is not a number", "bad count")
    one_error_line(*run("send", "nope://x", ev, '{"a":1}'), 2, r"bad URL", "unknown scheme")
    one_error_line(*run("send", "local://", "bad name!", '{"a":1}'), 1, r"^eventwire send: event 'bad name!'|^eventwire send: event bad name!",
                   "bad event name")
    one_error_line(*run("send", "local://", ev, '{"a":1}', "--to", "Nobody"), 1,
                   rf"no queue {ev}::Nobody", "send --to a missing queue on local://")
    one_error_line(*run("listen", "local://"), 2, r"expected URL EVENT", "listen without event")
    one_error_line(*run("dlq", "local://", ev, "L", "frob"), 2, r"unknown action 'frob'",
                   "dlq unknown action")
    one_error_line(*run("dlq", "local://", ev, "L", "list", "--rate", "5"), 2,
                   r"--rate applies to replay only", "dlq --rate on list")
    one_error_line(*run("bench", "local://", "--events", "x"), 2, r"--events: 'x'",
                   "bench bad number")
    # A port nothing listens on: bound, then closed.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    for url in (f"rabbitmq://guest:guest@127.0.0.1:{port}/",
                f"stomp://guest:guest@127.0.0.1:{port}/?dialect=rabbitmq",
                f"amqp://guest:guest@127.0.0.1:{port}?dialect=rabbitmq"):
        one_error_line(*run("send", url, ev, '{"a":1}', "--connect-timeout", "1500"), 3,
                       r"^eventwire send: broker unreachable: ", f"unreachable {url.split(':')[0]}")
    bad = re.sub(r"//([^:@/]+):([^@/]*)@", r"//\1:wrong-password@", rabbit_url)
    check(bad != rabbit_url, f"cannot put a wrong password into {rabbit_url}")
    code, out, err = run("send", bad, ev, '{"a":1}', "--connect-timeout", "5000")
    one_error_line(code, out, err, 4, r"^eventwire send: the broker refused the credentials: ",
                   "refused credentials")
    check("wrong-password" not in err, "the password appears on stderr")
    code, out, err = run("listen", bad, ev, "--connect-timeout", "5000")
    one_error_line(code, out, err, 4, r"refused the credentials", "listen, refused credentials")


def case_bench():
    code, out, err = run("bench", "local://", "--events", "3000", "--size", "64", timeout=120)
    check(code == 0, f"bench: exit {code}: {err}")
    lines = out.splitlines()
    check("\r" not in out, "bench drew a progress bar into a pipe")
    progress = [l for l in lines if re.fullmatch(r"bench: sent \d+/3000 received \d+/3000", l)]
    check(progress and progress[-1].endswith("received 3000/3000"),
          f"bench: no progress lines ending at 3000: {lines}")
    summary = re.fullmatch(r"bench: 3000 events of 64 bytes in ([0-9.]+) s: ([0-9]+) events/s, "
                           r"latency p50 ([0-9.]+) ms, p99 ([0-9.]+) ms", lines[-1])
    check(summary, f"bench: last line is not the summary: {lines[-1]!r}")
    p50, p99 = float(summary.group(3)), float(summary.group(4))
    check(0 <= p50 <= p99 and int(summary.group(2)) > 0, f"bench: implausible {lines[-1]}")
    check(len(lines) == len(progress) + 1, f"bench: unexpected lines {lines}")
    check(err == "", f"bench: stderr {err!r}")
    print(f"ok: bench in a pipe: {len(progress)} progress lines, then {lines[-1]}", flush=True)

    # On a terminal: a progress bar redrawn in place, then the same summary.
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([EW, "bench", "local://", "--events", "2000"], stdout=slave,
                         stderr=subprocess.PIPE)
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    code = p.wait(120)
    text = data.decode(errors="replace")
    check(code == 0, f"bench on a terminal: exit {code}: {p.stderr.read()!r}")
    bars = re.findall(r"\r\[([#.]{30})\] +(\d+)%", text)
    check(bars and bars[-1] == ("#" * 30, "100"), f"bench on a terminal: no bar ending full: {text!r}")
    check(re.search(r"bench: 2000 events of 100 bytes in [0-9.]+ s: [0-9]+ events/s, latency "
                    r"p50 [0-9.]+ ms, p99 [0-9.]+ ms", text), f"no summary on the terminal: {text!r}")
    check("bench: sent" not in text, "plain progress lines on a terminal")
    print(f"ok: bench on a terminal: {len(bars)} redraws of the bar, then the summary", flush=True)


EXPECT_BASE = {"world": "from CLI", "count": -7, "ratio": 1.5, "ok": True,
               "lines": [{"sku": "a-1", "qty": 2}], "tags": {"k": "v"}, "note": "ünï"}


def case_roundtrip(url):
    # CLI → C listener, msgpack and JSON.
    ev = UNIQUE + "rt1"
    peer = Proc([PEER, "listen", url, ev, "L", "2"])
    try:
        peer.wait_for(lambda: "ready" in peer.out, "C listener ready")
        code, out, err = run("send", url, ev, json.dumps(EXPECT_BASE), "--header", "session=s-1")
        check(code == 0 and re.fullmatch(r"[0-9a-f-]{36}\n", out) and err == "",
              f"send msgpack: exit {code}, {out!r}, {err!r}")
        with_blob = dict(EXPECT_BASE, blob=base64.b64encode(b"\x00\xff\x10").decode())
        code, out, err = run("send", url, ev, json.dumps(with_blob), "--format", "json",
                             "--header", "session=s-2")
        check(code == 0 and err == "", f"send json: exit {code}, {err!r}")
        peer.wait_for(lambda: len(peer.out) >= 3, "two events at the C listener")
        check(peer.finish() == 0, f"C listener: {peer.err}")
    finally:
        peer.kill()
    got = [json.loads(l) for l in peer.out[1:3]]
    got.sort(key=lambda g: g["session"])
    want1 = dict(EXPECT_BASE, session="s-1", content_type="application/msgpack")
    want2 = dict(EXPECT_BASE, session="s-2", content_type="application/json", blob_hex="00ff10")
    check(got[0] == want1, f"CLI msgpack → C: got {got[0]}, expected {want1}")
    check(got[1] == want2, f"CLI json → C: got {got[1]}, expected {want2}")
    print("ok: CLI send (msgpack, json) decoded by a C listener of the typed struct", flush=True)

    # C sender → CLI listen, msgpack and JSON; then SIGTERM drains, exit 0.
    ev = UNIQUE + "rt2"
    lis = Proc([EW, "listen", url, ev])
    try:
        lis.wait_for(lambda: any("listening on" in l for l in lis.err), "listen's ready line")
        check(re.fullmatch(rf"eventwire listen: listening on {ev}::eventwire-\S+", lis.err[0]),
              f"ready line {lis.err[0]!r}")
        for fmt in ("msgpack", "json"):
            p = subprocess.run([PEER, "send", url, ev, fmt], capture_output=True, timeout=60)
            check(p.returncode == 0, f"C send {fmt}: {p.stdout} {p.stderr}")
            lis.wait_for(lambda: len(lis.out) >= (1 if fmt == "msgpack" else 2),
                         f"the {fmt} event at eventwire listen")
        # A body of an unknown format: one line on stderr, and listening goes on.
        p = subprocess.run([PEER, "sendct", url, ev, "text/plain", "hello"],
                           capture_output=True, timeout=60)
        check(p.returncode == 0, f"C sendct: {p.stdout} {p.stderr}")
        lis.wait_for(lambda: len(lis.err) >= 2, "the error line of an unknown format")
        p = subprocess.run([PEER, "send", url, ev, "json"], capture_output=True, timeout=60)
        check(p.returncode == 0, f"C send json: {p.stdout} {p.stderr}")
        lis.wait_for(lambda: len(lis.out) >= 3, "an event after the unknown format")
        lis.p.send_signal(signal.SIGTERM)
        code = lis.finish()
    finally:
        lis.kill()
    check(code == 0, f"listen after SIGTERM: exit {code}; stderr {lis.err}")
    errs = [l for l in lis.err[1:] if l.strip()]
    check(len(errs) == 1 and re.match(rf"eventwire listen: {ev}::eventwire-\S+: .*unknown "
                                      r"content type 'text/plain'", errs[0]),
          f"listen's stderr after its ready line: {errs}")
    check(len([l for l in lis.out if l.strip()]) == 3, f"listen printed {lis.out}")
    lis.out = lis.out[:2]
    body = {"world": "from C", "count": -42, "ratio": 0.25, "ok": True,
            "lines": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 3}],
            "tags": {"k": "v"}, "note": "ünïcode", "blob": "AP8Q"}
    lines = [json.loads(l) for l in lis.out if l.strip()]
    check(len(lines) == 2, f"listen printed {lis.out}")
    for line, fmt in zip(lines, ("msgpack", "json")):
        check(line["body"] == body, f"C {fmt} → CLI: body {line['body']}, expected {body}")
        check(line["format"] == fmt and line["event"] == ev and line["headers"] == {"session": "c-1"}
              and re.fullmatch(r"[0-9a-f-]{36}", line["id"]) and line["attempt"] == 1
              and line["queue"].startswith(ev + "::eventwire-")
              and abs(line["sent_at"] / 1000 - time.time()) < 600,
              f"C {fmt} → CLI: line {line}")
    print("ok: a C sender's events (msgpack, json) print as their JSON; an unknown format "
          "is one stderr line; SIGTERM exits 0",
          flush=True)

    # SIGINT drains too, and a named listener's queue is shared.
    ev = UNIQUE + "rt3"
    lis = Proc([EW, "listen", url, ev, "--listener", "Named"])
    try:
        lis.wait_for(lambda: any("listening on" in l for l in lis.err), "named listen ready")
        check(lis.err[0].endswith(f"listening on {ev}::Named"), f"ready line {lis.err[0]!r}")
        code, out, err = run("send", url, ev, '{"i":1}', "--to", "Named", "--count", "5")
        check(code == 0 and len(out.split()) == 5, f"send --to --count 5: {code} {out!r} {err!r}")
        lis.wait_for(lambda: len(lis.out) >= 5, "five events sent --to the named listener")
        lis.p.send_signal(signal.SIGINT)
        code = lis.finish()
    finally:
        lis.kill()
    check(code == 0, f"listen after SIGINT: exit {code}")
    check(sorted(json.loads(l)["id"] for l in lis.out if l) == sorted(out.split()),
          "the ids printed by send are not the ids listen printed")
    print("ok: send --to --count reaches the named listener; SIGINT exits 0", flush=True)

    # Nobody reads stdout any more: listen stops, and the event it could not
    # print is a dead letter, not a loss.
    ev = UNIQUE + "rt4"
    lis = Proc([EW, "listen", url, ev])
    try:
        lis.wait_for(lambda: any("listening on" in l for l in lis.err), "listen ready")
        lis.sel.unregister(lis.p.stdout)
        lis.p.stdout.close()
        lis.closed.add("out")
        code, out, err = run("send", url, ev, '{"lost":"no"}')
        check(code == 0, f"send: {code} {err!r}")
        code = lis.finish()
    finally:
        lis.kill()
    check(code == 0 and any("stdout is closed: stopping" in l for l in lis.err),
          f"listen with its stdout closed: exit {code}, stderr {lis.err}")
    code, out, err = run("dlq", url, ev, "eventwire", "show")
    shown = [json.loads(l) for l in out.splitlines()]
    check(code == 0 and len(shown) == 1 and shown[0]["body"] == {"lost": "no"},
          f"the unprinted event is not a dead letter: {code} {out!r} {err!r}")
    code, out, err = run("dlq", url, ev, "eventwire", "purge")
    check(code == 0 and len(out.splitlines()) == 1, f"purge: {code} {out!r} {err!r}")
    print("ok: a closed stdout stops listen; the unprinted event is a dead letter", flush=True)


def dlq(url, ev, *args, timeout=120):
    return run("dlq", url, ev, "L", *args, timeout=timeout)


def case_dlq(url):
    # No dead letters, no dead-letter queue: nothing printed, exit 0.
    ev = UNIQUE + "none"
    for action in ("list", "show"):
        code, out, err = run("dlq", url, ev, "Nobody", action, "--wait", "200")
        check(code == 0 and out == "" and err == "",
              f"dlq {action} without dead letters: exit {code}, {out!r}, {err!r}")
    print("ok: list and show of a listener without dead letters print nothing", flush=True)

    n = 300
    ev = UNIQUE + "dlq"
    p = subprocess.run([PEER, "fail", url, ev, "L", str(n)], capture_output=True, timeout=300)
    check(p.returncode == 0 and b"dead %d" % n in p.stdout, f"making dead letters: {p.stdout}")

    code, out, err = dlq(url, ev, "list", "--limit", "1000")
    check(code == 0 and err == "", f"list: exit {code}, {err!r}")
    listed = [json.loads(l) for l in out.splitlines()]
    check(len(listed) == n, f"list printed {len(listed)} dead letters, expected {n}")
    for d in listed:
        check(d["dead_letter"]["reason"] == "listener-failed"
              and d["dead_letter"]["queue"] == f"{ev}::L" and d["dead_letter"]["attempts"] == "1"
              and "body" not in d and d["event"] == ev, f"list line {d}")
    code, out2, err = dlq(url, ev, "list", "--limit", "1000")
    check(code == 0 and len(out2.splitlines()) == n, "a second list does not see them all")
    code, out, err = dlq(url, ev, "list", "--reason", "decode-failed", "--limit", "1000")
    check(code == 0 and out == "", f"list --reason decode-failed printed {out[:200]!r}")
    print(f"ok: list shows {n} dead letters with their reasons, and takes none", flush=True)

    code, out, err = dlq(url, ev, "show", "--limit", "1000")
    shown = [json.loads(l) for l in out.splitlines()]
    check(code == 0 and len(shown) == n, f"show: exit {code}, {len(shown)} lines")
    n_of = {d["id"]: d["body"]["n"] for d in shown}
    check(sorted(n_of.values()) == list(range(n)), "show: the bodies are not n = 0..N-1")
    code, out, err = dlq(url, ev, "show", "--limit", "3")
    check(code == 0 and len(out.splitlines()) == 3, f"show --limit 3 printed {out!r}")
    print("ok: show gives the bodies; --limit holds", flush=True)

    # Replay killed with SIGKILL in the middle: nothing lost.
    rep = Proc([EW, "dlq", url, ev, "L", "replay", "--rate", "200"])
    try:
        rep.wait_for(lambda: len(rep.out) >= 120, "120 replayed lines")
        rep.p.send_signal(signal.SIGKILL)
        code = rep.finish()
    finally:
        rep.kill()
    check(code == -signal.SIGKILL, f"the replay ended by itself (exit {code}) before the kill")
    replayed = [json.loads(l) for l in rep.out if l.strip()]
    check(len(replayed) < n, "the replay was done before the kill")
    check(all(r["id"] != r["replayed"] for r in replayed), "a replay kept the old id")
    confirmed = {n_of[r["replayed"]] for r in replayed}
    code, out, err = dlq(url, ev, "show", "--limit", "1000")
    check(code == 0, f"show after the kill: exit {code}: {err}")
    still_dead = [json.loads(l)["body"]["n"] for l in out.splitlines()]
    dead = set(still_dead)
    check(len(still_dead) == len(dead), "a dead letter is there twice")
    check(len(dead) < n, "the replay took nothing off the dead letters")
    cnt = Proc([PEER, "count", url, ev, "L"])
    try:
        cnt.wait_for(lambda: "ready" in cnt.out, "counting listener ready")
        queued = set()

        def all_there():
            queued.update(int(l.split()[1]) for l in cnt.out if l.startswith("n "))
            return queued | dead >= set(range(n)) and queued >= confirmed

        cnt.wait_for(all_there, f"every event in the queue or the dead letters "
                     f"({len(dead)} dead)", timeout=90)
        cnt.p.send_signal(signal.SIGTERM)
        check(cnt.finish() == 0, f"counting listener: {cnt.err}")
    finally:
        cnt.kill()
    check(not (set(range(n)) - queued - dead), "lost")
    both = len(queued & dead)
    print(f"ok: replay killed after {len(replayed)} confirmed replays: {len(queued)} back "
          f"in the queue, {len(dead)} still dead letters, {both} in both, none lost", flush=True)

    # Replay the rest to the end, then nothing is left.
    code, out, err = dlq(url, ev, "replay", "--limit", "5")
    check(code == 0 and len(out.splitlines()) == 5, f"replay --limit 5: {code} {out!r} {err!r}")
    code, out, err = dlq(url, ev, "purge", "--reason", "handle-refused")
    check(code == 0 and out == "" and "stopped at a dead letter of another reason" in err,
          f"purge --reason handle-refused: {code} {out!r} {err!r}")
    code, out, err = dlq(url, ev, "purge")
    purged = [json.loads(l)["purged"] for l in out.splitlines()]
    check(code == 0 and len(purged) == len(dead) - 5, f"purge: exit {code}, {len(purged)} "
          f"purged, expected {len(dead) - 5}; {err!r}")
    code, out, err = dlq(url, ev, "list", "--wait", "200")
    check(code == 0 and out == "", f"list after purge: {out!r}")
    print("ok: replay --limit, purge --reason stops at another reason, purge empties",
          flush=True)


if CASE == "usage":
    case_usage(ARGS[0])
elif CASE == "bench":
    case_bench()
elif CASE == "roundtrip":
    case_roundtrip(ARGS[0])
elif CASE == "dlq":
    case_dlq(ARGS[0])
else:
    fail("unknown case " + CASE)
print("PASS", flush=True)
