#!/usr/bin/env python3
"""Two instances of examples/service against one broker, as two hosts of a
deployment would run them (two processes with their own server names):

  - the per_process listener (Audit) gets every payment on both instances;
  - the competing listener (Billing) gets each payment exactly once across
    the two (no broker fault here, so no redelivery);
  - SIGTERM stops each instance gracefully: exit status 0 and totals that
    match what it printed.

usage: test_service.py SERVICE URL_A [URL_B]

URL_B (default URL_A) is the second instance's: another protocol to the
same broker shows the same listeners across protocols.

Payment ids start at a base unique to the run, so that messages left in a
shared broker's queues by an earlier run are recognised and ignored.
Waits on the instances' output lines, with a deadline; on failure it says
what was missing."""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_harness import Instance, fail, kill_all, pump, stop_all  # noqa: E402


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    binary, url_a = sys.argv[1], sys.argv[2]
    url_b = sys.argv[3] if len(sys.argv) > 3 else url_a
    count = 200
    run = f"{os.getpid()}{random.randrange(1000)}"
    base = random.randrange(1, 1 << 40) * 1000
    wanted = set(range(base, base + count))

    b = Instance(binary, url_b, f"b{run}")
    a = None
    try:
        pump([b], lambda: b.ready, 60, f"'ready' from {b.server}")
        a = Instance(binary, url_a, f"a{run}", send=count, first=base)
        both = [a, b]
        pump(both, lambda: a.ready and a.sent is not None, 60,
             f"'ready' and 'sent' from {a.server}")

        def mine(ids):
            return [i for i in ids if i in wanted]

        def done():
            billed = set(mine(a.billing)) | set(mine(b.billing))
            return (billed == wanted and set(mine(a.audit)) == wanted
                    and set(mine(b.audit)) == wanted)

        def missing():
            billed = set(mine(a.billing)) | set(mine(b.billing))
            return (f"not billed: {sorted(i - base for i in wanted - billed)[:20]}; "
                    f"not audited on {a.server}: "
                    f"{sorted(i - base for i in wanted - set(mine(a.audit)))[:20]}; "
                    f"on {b.server}: {sorted(i - base for i in wanted - set(mine(b.audit)))[:20]}"
                    " (payment numbers from 0)")

        pump(both, done, 120, f"all {count} payments billed once and audited on both",
             missing)
        foreign = (len(a.billing) + len(b.billing) - len(mine(a.billing)) -
                   len(mine(b.billing)))
        if foreign:
            print(f"note: {foreign} billing message(s) of an earlier run were consumed")
        billed_total = len(mine(a.billing)) + len(mine(b.billing))
        print(f"billing: {len(mine(a.billing))} on {a.server}, {len(mine(b.billing))} "
              f"on {b.server}, {billed_total} in all for {count} payments")
        print(f"audit: {len(mine(a.audit))} on {a.server}, {len(mine(b.audit))} on {b.server}")
        if billed_total != count:
            fail(f"the competing listener handled {billed_total} for {count} payments")
        for inst in both:
            if len(mine(inst.audit)) != count:
                fail(f"{inst.server} audited {len(mine(inst.audit))} of {count} "
                     "(duplicates in a per_process queue)")

        # Graceful stop: SIGTERM, exit 0, totals match the lines printed.
        stop_all(both)
        print("PASS")
    finally:
        kill_all((a, b))


if __name__ == "__main__":
    main()
