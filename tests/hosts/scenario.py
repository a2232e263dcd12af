#!/usr/bin/env python3
"""Two service hosts and a broker host (network namespaces made by
netns.sh), one instance of examples/service on each service host:

 1. normal operation: 200 payments sent from h2; the competing listener
    (Billing) handles each exactly once across the two hosts, the
    per_process one (Audit) every payment on both;
 2. a stream of 3,000 payments from h2; once h1 is consuming from it, h1's
    link is cut (ip link set eth0 down: no FIN, no RST). The broker gives
    h1's unacknowledged payments to h2 once it notices (heart-beats):
    nothing is lost; payments billed twice are counted, not failed;
 3. h1's link comes back: h1 reconnects and consumes again (its per_process
    queue kept every payment of the stream; it also takes a share of 200
    more payments on the competing queue);
 4. SIGTERM: both stop gracefully (exit 0).

Artemis over STOMP can strand a delivery: a message the broker was sending
on a connection at the moment that connection failed stays "delivering"
on its queue, with no consumer, until the broker restarts (seen with
Artemis 2.40 in about one link cut in five on a loaded machine; not over
AMQP 1.0). No client can get it back. When the stream is still incomplete
a minute after the link came back on such a URL, the test proves that this
is what happened before it restarts the broker: both services stop
gracefully (every connection closes, so whatever a client still held goes
back to its queue), and the broker must then report exactly the missing
payments as delivering on queues without a consumer. Anything else fails.
After the restart both services start again under the same names and
every payment must arrive. The RESULT line says so.

usage: scenario.py SERVICE NAME LABEL URL_H1 URL_H2

NAME is netns.sh's. EW_HOSTS_BROKER_STAT (a command printing the broker's
`queue stat --json`) and EW_HOSTS_BROKER_RESTART name what run.sh does for
Artemis. Prints one RESULT line with the figures."""
import json
import os
import random
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "support"))
from service_harness import Instance, explain, fail, kill_all, pump, stop_all  # noqa: E402

NETNS = os.path.join(here, "netns.sh")
# How long the link stays cut at most once the stream is sent.
CUT_WAIT_S = 20
# How long after the link's return a stream may take before stranded
# deliveries are looked for (where the broker is known to strand them).
STRAND_WAIT_S = 60


class Host:
    """One service host: the instances of the service run there so far
    (a second one only after a broker restart), and what they printed."""

    def __init__(self, inst):
        self.runs = [inst]

    @property
    def now(self):
        return self.runs[-1]

    @property
    def billing(self):
        return [i for r in self.runs for i in r.billing]

    @property
    def audit(self):
        return [i for r in self.runs for i in r.audit]


def broker_stat():
    """{queue name: (consumers, delivering)} from the broker."""
    out = subprocess.run(["bash", "-c", os.environ["EW_HOSTS_BROKER_STAT"]],
                         capture_output=True, text=True, timeout=120).stdout
    start = out.find("{")
    if start < 0:
        fail(f"no queue statistics from the broker: {out[-500:]}")
    data = json.loads(out[start:])
    rows = next(v for v in data.values() if isinstance(v, list))
    return {r["name"]: (int(r["consumerCount"]), int(r["deliveringCount"])) for r in rows}


def main():
    if len(sys.argv) != 6:
        print(__doc__)
        sys.exit(2)
    binary, name, label, url1, url2 = sys.argv[1:]
    run = f"{os.getpid()}{random.randrange(1000)}"
    base = random.randrange(1, 1 << 40) * 10000
    h1 = h2 = None
    try:
        def start(host_name, url):
            return Instance(binary, url, f"{host_name}x{run}",
                            prefix=("ip", "netns", "exec", f"{name}-{host_name}"))

        h2 = Host(start("h2", url2))
        pump([h2.now], lambda: h2.now.ready, 60, "'ready' from h2")
        h1 = Host(start("h1", url1))
        both = [h1.now, h2.now]
        pump(both, lambda: h1.now.ready, 60, "'ready' from h1")

        def ids(lst, lo, n):
            return [i for i in lst if lo <= i < lo + n]

        def wave_done(lo, n, audit_on=(h1, h2)):
            want = set(range(lo, lo + n))
            billed = set(ids(h1.billing, lo, n)) | set(ids(h2.billing, lo, n))
            return billed == want and all(set(ids(i.audit, lo, n)) == want for i in audit_on)

        def gaps(lo, n):
            want = set(range(lo, lo + n))
            billed = set(ids(h1.billing, lo, n)) | set(ids(h2.billing, lo, n))
            return {"billed": want - billed,
                    "audited on h1": want - set(ids(h1.audit, lo, n)),
                    "audited on h2": want - set(ids(h2.audit, lo, n))}

        def missing(lo, n):
            def text():
                gaps_now = gaps(lo, n)
                # Which ones (their offset in the wave): where in the stream
                # they were says whether they were held at the cut.
                return "; ".join(f"not {k}: {len(v)} (offsets {sorted(i - lo for i in v)[:10]})"
                                 for k, v in gaps_now.items())
            return text

        def prove_stranded(lo, n):
            """The stream is incomplete long after the link came back, on a
            broker known to strand deliveries: shows that the broker holds
            exactly the missing payments, then restarts it."""
            gaps_now = gaps(lo, n)
            print(f"the stream is incomplete {STRAND_WAIT_S} s after the link came back: "
                  f"{missing(lo, n)()}; stopping both services", flush=True)
            stop_all([h1.now, h2.now])
            stat = broker_stat()
            queues = {"billed": "PaymentReceived:Billing",
                      "audited on h1": f"PaymentReceived:Audit-{h1.now.server}",
                      "audited on h2": f"PaymentReceived:Audit-{h2.now.server}"}
            held = {k: stat.get(q, (0, 0)) for k, q in queues.items()}
            print(f"the broker with both services stopped (consumers, delivering): {held}",
                  flush=True)
            for k, (consumers, delivering) in held.items():
                if consumers != 0 or delivering != len(gaps_now[k]):
                    fail(f"not {k}: {len(gaps_now[k])}, but the broker holds {delivering} as "
                         f"delivering with {consumers} consumers: these payments are not "
                         "stranded by the broker, they are lost or held elsewhere")
            total = sum(len(v) for v in gaps_now.values())
            what = f"{total} deliver{'y' if total == 1 else 'ies'}"
            print(f"the broker stranded {what} of h1's failed connection; restarting it",
                  flush=True)
            subprocess.run(["bash", "-c", os.environ["EW_HOSTS_BROKER_RESTART"]], check=True)
            return (f"; the broker stranded {what} of h1's failed connection until its "
                    "restart, then every one arrived")

        # 1. Normal operation: exactly once across hosts, every copy on each.
        w1, n1 = base, 200
        h2.now.send(n1, w1)
        pump(both, lambda: wave_done(w1, n1), 120, "the first 200 payments", missing(w1, n1))
        billed1 = len(ids(h1.billing, w1, n1)) + len(ids(h2.billing, w1, n1))
        if billed1 != n1:
            fail(f"normal operation: {billed1} billings for {n1} payments (want exactly once)")
        for host in (h1, h2):
            if len(ids(host.audit, w1, n1)) != n1:
                fail(f"{host.now.server}: {len(ids(host.audit, w1, n1))} audits for {n1} payments")

        # 2. Cut h1's link in the middle of a stream.
        w2, n2 = base + 1000, 3000
        h2.now.send(n2, w2, 1000)
        pump(both, lambda: len(ids(h1.billing, w2, n2)) >= 30, 60,
             "h1 consuming the stream")
        subprocess.run([NETNS, "cut", name, "h1"], check=True)
        t_cut = time.monotonic()
        h1_at_cut = len(ids(h1.billing, w2, n2))
        # The broker gives h1's unacknowledged payments to h2 once it sees
        # h1's connection is dead: from its heart-beats, or, for a broker
        # that does not check the client's (RabbitMQ's AMQP 1.0 plugin),
        # when the link is back and h1's host resets the old connection.
        done_cut = pump(both, lambda: wave_done(w2, n2, audit_on=(h2,)), CUT_WAIT_S,
                        None, None, give_up=True)
        t_all = time.monotonic() - t_cut
        held = n2 - len(set(ids(h1.billing, w2, n2)) | set(ids(h2.billing, w2, n2)))

        # 3. The link comes back: h1 consumes again.
        subprocess.run([NETNS, "restore", name, "h1"], check=True)
        t_restore = time.monotonic()
        stranded = ""
        strands = url1.startswith("stomp") and "dialect=artemis" in url1
        if not pump(both, lambda: wave_done(w2, n2), STRAND_WAIT_S if strands else 180,
                    None, None, give_up=True):
            if not strands:
                explain(both)
                print(missing(w2, n2)())
                fail("h1 back: the whole stream billed, and audited on h1 within 180 s")
            stranded = prove_stranded(w2, n2)
            h2.runs.append(start("h2", url2))
            h1.runs.append(start("h1", url1))
            both = [h1.now, h2.now]
            pump(both, lambda: h1.now.ready and h2.now.ready, 120,
                 "'ready' from both after the broker's restart")
            pump(both, lambda: wave_done(w2, n2), 120,
                 "the stranded payments after the broker's restart", missing(w2, n2))
        t_back = time.monotonic() - t_restore
        w3, n3 = base + 5000, 200
        h2.now.send(n3, w3)
        pump(both, lambda: wave_done(w3, n3), 120, "200 payments after the link came back",
             missing(w3, n3))
        if not ids(h1.billing, w3, n3):
            fail("h1 took no share of the competing listener's payments after it came back")

        back = (f"h1 consumed again {t_back:.1f} s after the link came back" if not stranded
                else f"the stream was complete {t_back:.1f} s after the link came back (with "
                     "the broker's restart)")
        billed2 = len(ids(h1.billing, w2, n2)) + len(ids(h2.billing, w2, n2))
        dups = billed2 - n2
        during = (f"the stream was all billed {t_all:.1f} s after the cut" if done_cut else
                  f"{held} payments were still held for h1 {t_all:.0f} s after the cut "
                  "(the broker had not noticed its connection was dead) and were "
                  "billed once the link came back")
        print(f"RESULT hosts {label}: stream {n2} payments, lost 0, billed twice {dups}; "
              f"h1 billed {h1_at_cut} before the cut, "
              f"{len(ids(h1.billing, w2, n2)) - h1_at_cut} after; {during}; "
              f"{back} and then billed "
              f"{len(ids(h1.billing, w3, n3))} of {n3} new payments{stranded}", flush=True)

        # 4. Graceful stop.
        stop_all(both)
        print("PASS", flush=True)
    finally:
        kill_all([r for host in (h1, h2) if host for r in host.runs])


if __name__ == "__main__":
    main()
