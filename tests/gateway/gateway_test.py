"""Tests of `eventwire serve`, driven as an HTTP client drives it: POSTs,
Server-Sent Event streams read line by line, /metrics checked by promtool
and read with the Prometheus text parser, probes, signals. Synchronises on what it reads (an
event on a stream, a probe's answer), never on sleeps.

  gateway_test.py EVENTWIRE http URL      round trips, bad input, resume, metrics, SIGTERM
  gateway_test.py EVENTWIRE outage URL    a rabbitmq:// URL reached through a relay
                                          this test cuts: 503, readiness, recovery
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

EW, CASE, URL = sys.argv[1], sys.argv[2], sys.argv[3]
UNIQUE = f"gw{os.getpid()}x{int(time.time() * 1000) % 100000000}"
SERVER = "gwtest" + str(os.getpid())


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def ok(msg):
    print("ok: " + msg, flush=True)


GATEWAYS = []


class Gateway:
    """eventwire serve on a free port; its stderr lines are collected."""

    def __init__(self, url, *args):
        GATEWAYS.append(self)
        self.argv = [EW, "serve", url, "--http", "127.0.0.1:0", "--server", SERVER, *args]
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_err(r"listening on http://127\.0\.0\.1:(\d+)/", "the listening line")
        self.port = int(re.search(r":(\d+)/", line).group(1))

    def _read(self):
        for raw in self.p.stderr:
            with self.cv:
                self.err.append(raw.decode(errors="replace").rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.err.append(None)  # EOF
            self.cv.notify_all()

    def wait_err(self, pattern, what, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for l in self.err:
                    if l is not None and re.search(pattern, l):
                        return l
                left = deadline - time.monotonic()
                if left <= 0 or (self.err and self.err[-1] is None):
                    fail(f"{what}: not seen on serve's stderr; exit {self.p.poll()}; "
                         f"stderr {self.err[-8:]}")
                self.cv.wait(left)

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        c = self.conn()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.getheader("Content-Type", ""), data.decode(errors="replace")

    def post(self, event, obj, headers=None):
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", "/events/" + event, body, h)

    def publish(self, event, obj, headers=None):
        status, _, text = self.post(event, obj, headers)
        check(status == 202, f"POST /events/{event}: {status} {text}")
        return json.loads(text)["id"]

    def stream(self, event, last_id=None):
        return Stream(self, event, last_id)

    def metrics(self):
        status, ctype, text = self.request("GET", "/metrics")
        check(status == 200 and ctype.startswith("text/plain; version=0.0.4"),
              f"/metrics: {status} {ctype}")
        # The Prometheus project's own check of the format and its naming
        # rules (scripts/deps.sh installs promtool), then the values.
        lint = subprocess.run(["promtool", "check", "metrics"], input=text,
                              capture_output=True, text=True, timeout=60)
        check(lint.returncode == 0,
              f"promtool check metrics: {lint.returncode} {lint.stdout}{lint.stderr}\n{text}")
        samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def stop(self, sig=signal.SIGTERM, timeout=60):
        self.p.send_signal(sig)
        try:
            code = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            fail(f"serve did not end within {timeout} s after {sig.name}; stderr {self.err[-8:]}")
        return code


class Stream:
    """GET /events/NAME read event by event."""

    def __init__(self, gw, event, last_id=None):
        self.c = gw.conn()
        h = {"Accept": "text/event-stream"}
        if last_id:
            h["Last-Event-ID"] = last_id
        self.c.request("GET", "/events/" + event, headers=h)
        self.r = self.c.getresponse()
        if self.r.status != 200:
            fail(f"GET /events/{event}: {self.r.status} {self.r.read()!r}")
        ctype = self.r.getheader("Content-Type", "")
        check(ctype.startswith("text/event-stream"), f"stream Content-Type {ctype}")
        self.retry = None

    def next(self):
        """The next event as a dict (event, id, data), or None at its end."""
        ev = {}
        while True:
            line = self.r.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line == "":
                if "data" in ev:
                    return ev
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "retry":
                self.retry = int(value)
            else:
                ev[field] = value

    def expect(self, event, ids, bodies=None, what=""):
        for i, want in enumerate(ids):
            ev = self.next()
            check(ev is not None, f"{what}: stream ended before {want}")
            check(ev.get("event") == event and ev.get("id") == want,
                  f"{what}: expected event {event} id {want} (#{i}), got {ev}")
            if bodies:
                check(json.loads(ev["data"]) == bodies[i],
                      f"{what}: data {ev['data']} != {bodies[i]}")

    def close(self):
        self.r.close()  # the response holds the socket too
        self.c.close()


# ---------------------------------------------------------------------------

def case_http(url):
    code = subprocess.run([EW, "serve", "--help"], capture_output=True)
    check(code.returncode == 0 and b"Usage: eventwire serve" in code.stdout
          and b"Exit codes: 0 ok" in code.stdout, "serve --help")
    code = subprocess.run([EW, "serve", url], capture_output=True)
    check(code.returncode == 2 and b"--http HOST:PORT is required" in code.stderr,
          f"serve without --http: {code.returncode} {code.stderr!r}")
    ok("serve --help; --http is required")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    for args, want, pattern in (
            (["--http", "nonsense"], 2, r"^eventwire serve: --http 'nonsense': expected HOST:PORT$"),
            (["--http", "127.0.0.1:%d" % busy.getsockname()[1]], 1,
             r"^eventwire serve: --http 127\.0\.0\.1:\d+: cannot listen: Address already in use$"),
            (["--http", "127.0.0.1:0", "--buffer", "0"], 2, r"--buffer: '0' is not a number"),
            (["--http", "127.0.0.1:0", "--bogus"], 2, r"unknown option --bogus")):
        p = subprocess.run([EW, "serve", url, *args], capture_output=True, timeout=60)
        lines = p.stderr.decode().splitlines()
        check(p.returncode == want and len(lines) == 1 and re.search(pattern, lines[0]),
              f"serve {args}: exit {p.returncode} (expected {want}), stderr {lines}")
        ok(f"serve {' '.join(args)}: exit {want}: {lines[0]}")
    busy.close()

    gw = Gateway(url, "--buffer", "64", "--retry-ms", "1500", "--body-limit", "4096",
                 "--keepalive-s", "2")
    codes = {}

    def expect_status(got, want, what, pattern=None):
        status, ctype, text = got
        check(status == want, f"{what}: status {status}, expected {want}: {text}")
        if pattern:
            check(ctype.startswith("application/json"), f"{what}: Content-Type {ctype}")
            err = json.loads(text)["error"]
            check(re.search(pattern, err), f"{what}: error {err!r} does not match {pattern!r}")
        codes[want] = codes.get(want, 0) + 1
        ok(f"{what}: {status} {text.strip()[:100]}")

    check(gw.request("GET", "/healthz")[0] == 200, "/healthz")
    check(gw.request("GET", "/readyz")[0] == 200, "/readyz after start")
    status, ctype, page = gw.request("GET", "/")
    check(status == 200 and ctype.startswith("text/html") and "EventSource" in page, "GET /")
    ok("/healthz, /readyz, / answer 200")

    ev = UNIQUE + ".orders"
    s1 = gw.stream(ev)
    bodies = [{"n": i, "text": f"héllo {i}", "nested": {"a": [1, 2.5, None, True]}}
              for i in range(3)]
    ids = [gw.publish(ev, b, {"X-Ew-Header-Trace-Id": f"t-{i}"}) for i, b in enumerate(bodies)]
    posted = 3
    s1.expect(ev, ids, bodies, "round trip")
    check(s1.retry == 1500, f"retry: {s1.retry}, expected 1500")
    ok(f"POST -> 202 with the id, the stream shows {len(ids)} events with those ids, in order")

    # Bad input: a clear error, and nothing is published.
    expect_status(gw.post(ev, '{"a":1,}'), 400, "bad JSON", r"^bad JSON at line 1, column 8")
    expect_status(gw.post(ev, "[1,2]"), 400, "not an object", r"must be a JSON object")
    expect_status(gw.post(ev, ""), 400, "empty body", r"^bad JSON")
    expect_status(gw.post(ev, {"pad": "x" * 5000}), 413, "over the body limit",
                  r"over the limit of 4096 bytes")
    c = gw.conn()
    c.request("POST", "/events/" + ev, body=iter([b'{"pad":"', b"y" * 3000, b"z" * 3000, b'"}']),
              headers={"Content-Type": "application/json"}, encode_chunked=True)
    r = c.getresponse()
    expect_status((r.status, r.getheader("Content-Type"), r.read().decode()), 413,
                  "chunked, over the body limit", r"over the limit")
    c.close()
    expect_status(gw.post("bad%20name!", {"a": 1}), 400, "bad event name", r"name")
    expect_status(gw.post(ev, {"a": 1}, {"X-Ew-Header-ew-attempt": "9"}), 400,
                  "a library header", r"library's own")
    expect_status(gw.request("GET", "/nope"), 404, "unknown path", r"no such path")
    expect_status(gw.request("GET", "/events/"), 404, "no event name", r"no such path")
    expect_status(gw.request("DELETE", "/metrics"), 405, "DELETE /metrics", r"not allowed")
    marker = gw.publish(ev, {"marker": 1})
    posted += 1
    s1.expect(ev, [marker], [{"marker": 1}], "after the bad input")
    ok("bad input published nothing: the next event on the stream is the next good POST")
    ids.append(marker)

    if not url.startswith("local:"):
        p = subprocess.run([EW, "send", url, ev, '{"via":"cli"}', "--header", "k=v"],
                           capture_output=True, timeout=60)
        check(p.returncode == 0, f"eventwire send: {p.returncode} {p.stderr!r}")
        cli_id = p.stdout.decode().strip()
        s1.expect(ev, [cli_id], [{"via": "cli"}], "eventwire send")
        ids.append(cli_id)
        posted += 1
        ok("an event sent by `eventwire send` from another process appears on the stream")
    sent_by_gateway = posted - (0 if url.startswith("local:") else 1)

    # Resume: nothing missing, nothing repeated.
    s1.close()
    missed_bodies = [{"missed": i} for i in range(3)]
    missed = [gw.publish(ev, b) for b in missed_bodies]
    posted += 3
    sent_by_gateway += 3
    s2 = gw.stream(ev, last_id=ids[-1])
    s2.expect(ev, missed, missed_bodies, "resume")
    live = gw.publish(ev, {"live": 1})
    posted += 1
    sent_by_gateway += 1
    s2.expect(ev, [live], [{"live": 1}], "live after the replay")
    ok("Last-Event-ID: the 3 events sent while no stream was open, then the live one, once each")
    resumes = 1

    # Replay racing live events: a publisher posts while a reader drops and
    # resumes again and again; it must read the posted ids exactly, in order.
    s2.close()
    start = live
    race_ids, race_n = [], 30
    def publisher():
        for i in range(race_n):
            race_ids.append(gw.publish(ev, {"race": i}))
    t = threading.Thread(target=publisher)
    t.start()
    got, last, rounds = [], start, 0
    while len(got) < race_n:
        s = gw.stream(ev, last_id=last)
        resumes += 1
        rounds += 1
        for _ in range(3):
            e = s.next()
            check(e is not None and e.get("event") == ev, f"race: stream gave {e}")
            got.append(e["id"])
            last = e["id"]
            if len(got) == race_n:
                break
        s.close()
    t.join()
    posted += race_n
    sent_by_gateway += race_n
    check(got == race_ids, f"race: read {got} != posted {race_ids}")
    ok(f"{race_n} events posted while the reader resumed {rounds} times: each read once, in order")

    # An id the buffer does not have: a gap notice, then what it holds.
    s3 = gw.stream(ev, last_id="no-such-id")
    e = s3.next()
    check(e and e.get("event") == "ew:gap" and "not in the buffer" in e["data"],
          f"unknown Last-Event-ID: first {e}")
    all_ids = ids + missed + [live] + race_ids
    s3.expect(ev, all_ids[-64:][:5], None, "after the gap")
    s3.close()
    ok("an unknown Last-Event-ID gives an ew:gap event, then the buffer from its oldest")

    # /metrics, parsed, with the values of what this test did.
    live_stream = gw.stream(ev)  # one stream open while the metrics are read
    # The closed streams end once the gateway notices their clients left
    # (within a second): read until only the open one is counted.
    deadline = time.monotonic() + 30
    while True:
        m = gw.metrics()
        if m[("eventwire_gateway_streams", ())] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polls a condition the gateway has no event for
    def val(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        check(key in m, f"/metrics has no {name}{labels}; has {sorted(k for k in m if k[0] == name)}")
        return m[key]
    queue = f"{ev}::eventwire-gateway-{SERVER}"
    check(val("messaging_client_sent_messages_total") == sent_by_gateway,
          f"sent {val('messaging_client_sent_messages_total')} != {sent_by_gateway}")
    check(val("messaging_client_consumed_messages_total", messaging_destination_name=queue)
          == posted, f"consumed != {posted}")
    check(val("eventwire_listener_handled_total", messaging_destination_name=queue) == posted,
          "handled")
    check(val("eventwire_gateway_buffered_events", event=ev) == min(posted, 64), "buffered")
    check(val("eventwire_gateway_streams") == 1, "open streams")
    check(val("eventwire_gateway_resumes_total") == resumes, f"resumes != {resumes}")
    check(val("eventwire_gateway_gaps_total") == 1, "gaps")
    check(val("eventwire_manager_ready") == 1, "ready")
    for code in (400, 404, 405, 413):
        check(val("eventwire_gateway_http_responses_total", code=str(code)) == codes[code],
              f"responses {code} != {codes[code]}")
    check(val("eventwire_gateway_http_responses_total", code="202") == sent_by_gateway, "202s")
    ok(f"/metrics parses; sent {sent_by_gateway}, consumed {posted} on {queue}, "
       f"{resumes} resumes, 1 gap, responses by code as done")

    # --format json --durable: another gateway, its own event.
    gw2 = Gateway(url, "--format", "json", "--durable")
    ev2 = UNIQUE + ".durable"
    s4 = gw2.stream(ev2)
    body = {"n": 1, "bytes_as_text": "aGk="}
    big = {"n": 2, "pad": "p" * 40000}  # larger than one write of a stream
    s4.expect(ev2, [gw2.publish(ev2, body), gw2.publish(ev2, big)], [body, big],
              "--format json --durable")
    s4.close()
    check(gw2.stop() == 0, "the second gateway's exit code")
    ok("--format json --durable: published and streamed")

    # Each stream is its own per_process listener: two streams, two queues
    # on the broker, both get every event; closing one removes its queue.
    ev3 = UNIQUE + ".own"
    sa = gw.stream(ev3)
    sb = gw.stream(ev3)
    qs = stream_queues(gw, url, ev3)
    check(len(qs) == 2, f"two streams of {ev3}: queues {qs}")
    bodies = [{"own": i} for i in range(3)]
    ids = [gw.publish(ev3, b) for b in bodies]
    sa.expect(ev3, ids, bodies, "the first of two streams")
    sb.expect(ev3, ids, bodies, "the second of two streams")
    deadline = time.monotonic() + 60
    while True:
        m = gw.metrics()
        handled = [m.get(("eventwire_listener_handled_total",
                          (("messaging_destination_name", q),))) for q in qs]
        if handled == [3, 3]:
            break
        check(time.monotonic() < deadline, f"each stream's queue handled {handled}, not 3 each")
        time.sleep(0.1)  # polls a condition the gateway has no event for
    ok(f"two streams: two queues {qs}, each consumed all 3 events")
    sa.close()
    deadline = time.monotonic() + 60
    while True:
        left = stream_queues(gw, url, ev3)
        if len(left) == 1:
            break
        check(time.monotonic() < deadline, f"after closing one stream the queues are {left}")
        time.sleep(0.1)  # polls the broker: nothing tells the test the queue went
    last = gw.publish(ev3, {"own": 3})
    sb.expect(ev3, [last], [{"own": 3}], "the stream left open")
    sb.close()
    ok(f"closing a stream deleted its queue; {left} remains and streams on")

    # SIGTERM with a stream open: the stream ends, the gateway exits 0.
    code = gw.stop(signal.SIGTERM)
    e = live_stream.next()
    check(e is None, f"after SIGTERM the stream gave {e}")
    check(code == 0, f"serve exit {code} after SIGTERM; stderr {gw.err[-8:]}")
    errs = [l for l in gw.err if l and not re.search(r"listening on|stopping|stopped", l)]
    check(not errs, f"unexpected stderr lines: {errs}")
    ok("SIGTERM: the open stream ended, serve exited 0")


def stream_queues(gw, url, event):
    """The queues of event's streams, E::eventwire-gateway-s<n>-<server>: as
    the broker lists them (rabbitmqctl), or on local:// (the gateway is the
    broker) as the gateway's metrics name them."""
    prefix = f"{event}::eventwire-gateway-s"
    if url.startswith("local:"):
        names = {dict(k[1]).get("messaging_destination_name", "")
                 for k in gw.metrics() if k[0] == "eventwire_listener_handled_total"}
    else:
        ctl = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                           "brokers", "rabbitmq.sh")
        p = subprocess.run([ctl, "ctl", "list_queues", "name", "-q", "--no-table-headers"],
                           capture_output=True, timeout=120)
        check(p.returncode == 0, f"rabbitmqctl list_queues: {p.returncode} {p.stderr[-300:]!r}")
        names = set(p.stdout.decode().split())
    return sorted(n for n in names if n.startswith(prefix) and n.endswith("-" + SERVER))


class Relay:
    """A TCP relay to the broker that this test can cut and restore."""

    def __init__(self, port):
        self.up = port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.cut_now = False
        self.socks = []
        self.mu = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            c, _ = self.ls.accept()
            with self.mu:
                if self.cut_now:
                    c.close()
                    continue
                u = socket.create_connection(("127.0.0.1", self.up))
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.mu:
            self.cut_now = True
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.socks = []

    def restore(self):
        with self.mu:
            self.cut_now = False


def wait_status(gw, path, want, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        status = gw.request("GET", path)[0]
        if status == want:
            return
        if time.monotonic() > deadline:
            fail(f"{what}: {path} still {status} after {timeout} s")
        time.sleep(0.1)  # polls a condition: a probe has no event to wait on


def case_outage(url):
    m = re.match(r"(rabbitmq://[^@]*@127\.0\.0\.1:)(\d+)(/.*)?$", url)
    check(m, f"outage needs a rabbitmq://...@127.0.0.1:PORT/ URL, not {url}")
    relay = Relay(int(m.group(2)))
    via = f"{m.group(1)}{relay.port}{m.group(3) or '/'}"
    via += ("&" if "?" in via else "?") + "heartbeat_ms=1000"
    gw = Gateway(via, "--send-timeout", "2000", "--retry-ms", "500")
    ev = UNIQUE + ".outage"
    s = gw.stream(ev)
    before = gw.publish(ev, {"before": 1})
    s.expect(ev, [before], [{"before": 1}], "before the outage")
    relay.cut()
    wait_status(gw, "/readyz", 503, "readiness during the outage")
    ok("/readyz is 503 while the broker is cut off; /healthz stays 200")
    check(gw.request("GET", "/healthz")[0] == 200, "/healthz during the outage")
    status, _, text = gw.post(ev, {"during": 1})
    check(status == 503 and "broker unreachable" in json.loads(text)["error"],
          f"POST during the outage: {status} {text}")
    ok(f"POST during the outage: 503 {text}")
    relay.restore()
    wait_status(gw, "/readyz", 200, "readiness after the outage")
    after = gw.publish(ev, {"after": 1})
    s.expect(ev, [after], [{"after": 1}], "after the outage, on the stream opened before it")
    ok("after the outage: ready again, and the stream opened before it shows the next event")
    m = gw.metrics()
    check(m[("eventwire_gateway_http_responses_total", (("code", "503"),))] >= 1, "503 counted")
    check(gw.stop(signal.SIGINT) == 0, "SIGINT exit code")
    ok("SIGINT: exit 0")


try:
    {"http": case_http, "outage": case_outage}[CASE](URL)
except BaseException:
    # A failure or an unexpected error (a reset connection, say): what the
    # gateways said.
    for g in GATEWAYS:
        lines = [l for l in g.err if l is not None]
        # A sanitizer's report from its start, else the last lines.
        at = next((i for i, l in enumerate(lines) if "ERROR: AddressSanitizer" in l), None)
        shown = lines[at:at + 60] if at is not None else lines[-30:]
        print(f"serve (exit {g.p.poll()}): stderr:", flush=True)
        for l in shown:
            print(f"  {l}", flush=True)
    raise
print("PASS", flush=True)
