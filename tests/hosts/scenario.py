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

usage: scenario.py SERVICE NAME LABEL URL_H1 URL_H2

NAME is netns.sh's. Prints one RESULT line with the figures."""
import os
import random
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "support"))
from service_harness import Instance, fail, kill_all, pump, stop_all  # noqa: E402

NETNS = os.path.join(here, "netns.sh")
# How long the link stays cut at most once the stream is sent.
CUT_WAIT_S = 20


def main():
    if len(sys.argv) != 6:
        print(__doc__)
        sys.exit(2)
    binary, name, label, url1, url2 = sys.argv[1:]
    run = f"{os.getpid()}{random.randrange(1000)}"
    base = random.randrange(1, 1 << 40) * 10000
    h1 = h2 = None
    try:
        h2 = Instance(binary, url2, f"h2x{run}", prefix=("ip", "netns", "exec", f"{name}-h2"))
        pump([h2], lambda: h2.ready, 60, "'ready' from h2")
        h1 = Instance(binary, url1, f"h1x{run}", prefix=("ip", "netns", "exec", f"{name}-h1"))
        both = [h1, h2]
        pump(both, lambda: h1.ready, 60, "'ready' from h1")

        def ids(lst, lo, n):
            return [i for i in lst if lo <= i < lo + n]

        def wave_done(lo, n, audit_on=(h1, h2)):
            want = set(range(lo, lo + n))
            billed = set(ids(h1.billing, lo, n)) | set(ids(h2.billing, lo, n))
            return billed == want and all(set(ids(i.audit, lo, n)) == want for i in audit_on)

        def missing(lo, n):
            want = set(range(lo, lo + n))

            def text():
                billed = set(ids(h1.billing, lo, n)) | set(ids(h2.billing, lo, n))
                gaps = {"billed": want - billed,
                        "audited on h1": want - set(ids(h1.audit, lo, n)),
                        "audited on h2": want - set(ids(h2.audit, lo, n))}
                # Which ones (their offset in the wave): where in the stream
                # they were says whether they were held at the cut.
                return "; ".join(f"not {k}: {len(v)} (offsets {sorted(i - lo for i in v)[:10]})"
                                 for k, v in gaps.items())
            return text

        # 1. Normal operation: exactly once across hosts, every copy on each.
        w1, n1 = base, 200
        h2.send(n1, w1)
        pump(both, lambda: wave_done(w1, n1), 120, "the first 200 payments", missing(w1, n1))
        billed1 = len(ids(h1.billing, w1, n1)) + len(ids(h2.billing, w1, n1))
        if billed1 != n1:
            fail(f"normal operation: {billed1} billings for {n1} payments (want exactly once)")
        for inst in both:
            if len(ids(inst.audit, w1, n1)) != n1:
                fail(f"{inst.server}: {len(ids(inst.audit, w1, n1))} audits for {n1} payments")

        # 2. Cut h1's link in the middle of a stream.
        w2, n2 = base + 1000, 3000
        h2.send(n2, w2, 1000)
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
        pump(both, lambda: wave_done(w2, n2), 180,
             "h1 back: the whole stream billed, and audited on h1", missing(w2, n2))
        t_back = time.monotonic() - t_restore
        w3, n3 = base + 5000, 200
        h2.send(n3, w3)
        pump(both, lambda: wave_done(w3, n3), 120, "200 payments after the link came back",
             missing(w3, n3))
        if not ids(h1.billing, w3, n3):
            fail("h1 took no share of the competing listener's payments after it came back")

        billed2 = len(ids(h1.billing, w2, n2)) + len(ids(h2.billing, w2, n2))
        dups = billed2 - n2
        during = (f"the stream was all billed {t_all:.1f} s after the cut" if done_cut else
                  f"{held} payments were still held for h1 {t_all:.0f} s after the cut "
                  "(the broker had not noticed its connection was dead) and were "
                  "billed once the link came back")
        print(f"RESULT hosts {label}: stream {n2} payments, lost 0, billed twice {dups}; "
              f"h1 billed {h1_at_cut} before the cut, "
              f"{len(ids(h1.billing, w2, n2)) - h1_at_cut} after; {during}; "
              f"h1 consumed again {t_back:.1f} s after the link came back and then billed "
              f"{len(ids(h1.billing, w3, n3))} of {n3} new payments", flush=True)

        # 4. Graceful stop.
        stop_all(both)
        print("PASS", flush=True)
    finally:
        kill_all((h1, h2))


if __name__ == "__main__":
    main()
