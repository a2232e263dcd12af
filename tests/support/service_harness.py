"""Drives instances of examples/service (a test harness, not a test): each
instance is a process whose output lines are read as they come, with
deadlines, and whose standard input takes "send" commands."""
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


class Instance:
    def __init__(self, binary, url, server, send=0, first=1, prefix=()):
        """prefix: a command that runs the binary, e.g. ip netns exec NS."""
        env = dict(os.environ, EW_URL=url, EW_SERVER=server, EW_SEND=str(send),
                   EW_SEND_FIRST=str(first))
        self.server = server
        # stderr goes to a file: a pipe nobody reads would block its logging.
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([*prefix, binary], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err)
        self.partial = b""
        self.lines = []
        self.billing = []
        self.audit = []
        self.ready = False
        self.sent = None
        self.sends = 0  # "sent" lines so far
        self.stopped = None

    def send(self, count, first, pause_us=0):
        """Asks the instance to send count payments with ids first and up."""
        self.proc.stdin.write(f"send {count} {first} {pause_us}\n".encode())
        self.proc.stdin.flush()

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip()

    def read(self):
        """Takes what the instance printed so far; False at the end of its
        output. The pipe is read with os.read: a buffered reader would keep
        lines that select() no longer reports."""
        data = os.read(self.proc.stdout.fileno(), 65536)
        if not data:
            return False
        *whole, self.partial = (self.partial + data).split(b"\n")
        for line in whole:
            self.take(line.decode().strip())
        return True

    def take(self, line):
        self.lines.append(line)
        words = line.split()
        if not words:
            return
        if words[0] == "ready":
            self.ready = True
        elif words[0] == "billing":
            self.billing.append(int(words[1]))
        elif words[0] == "audit":
            self.audit.append(int(words[1]))
        elif words[0] == "sent":
            self.sent = int(words[1])
            self.sends += 1
        elif words[0] == "stopped":
            self.stopped = line


def print_log_tail(inst, why, lines=40):
    """The last lines of inst's log (what its connections did: lost,
    reconnected, subscribed again)."""
    log = inst.stderr().splitlines()
    print(f"{inst.server}: {why}; its log's last {min(len(log), lines)} of {len(log)} lines:")
    for line in log[-lines:]:
        print(f"  {line}")


def print_stacks(inst):
    """Every thread's stack of a process that hangs (gdb from Debian), so
    that a hang says where it is."""
    try:
        out = subprocess.run(["gdb", "-p", str(inst.proc.pid), "-batch", "-nx",
                              "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"{inst.server}: no stacks ({e})")
        return
    print(f"{inst.server}: the stacks of its threads:")
    for line in out.splitlines():
        if line.startswith(("Thread ", "#")):
            print(f"  {line}")


def explain(instances):
    for inst in instances:
        print(f"{inst.server}: last lines: {inst.lines[-5:]}")
        try:
            rc = inst.proc.wait(timeout=10)
            print(f"{inst.server}: exited with {rc}: {inst.stderr()}")
        except subprocess.TimeoutExpired:
            print_log_tail(inst, "still running")
            print_stacks(inst)


def pump(instances, until, timeout, what, missing=None, give_up=False):
    """Reads the instances' output until until() is true, or fails after
    timeout seconds naming what was awaited (with give_up: returns False
    instead). True once until() is."""
    sel = selectors.DefaultSelector()
    for inst in instances:
        if inst.proc.stdout and not inst.proc.stdout.closed:
            sel.register(inst.proc.stdout, selectors.EVENT_READ, inst)
    deadline = time.monotonic() + timeout
    ended = []
    try:
        while not until():
            left = deadline - time.monotonic()
            if left <= 0 and give_up:
                return False
            if left <= 0:
                explain(instances)
                if missing:
                    print(missing())
                fail(f"no {what} within {timeout} s")
            events = sel.select(min(left, 1.0))
            for key, _ in events:
                if not key.data.read():
                    # Its output ended: it exited, or is about to.
                    sel.unregister(key.fileobj)
                    ended.append(key.data)
                    if not sel.get_map() and not until():
                        explain(ended)
                        fail(f"every instance ended before {what}")
        return True
    finally:
        sel.close()


def stop_all(instances):
    """SIGTERM to each: each must print its "stopped" line, and exit 0 with
    totals that match the lines it printed."""
    for inst in instances:
        inst.proc.send_signal(signal.SIGTERM)
    pump(instances, lambda: all(i.stopped for i in instances), 30, "'stopped' after SIGTERM")
    for inst in instances:
        try:
            rc = inst.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print_log_tail(inst, f"said '{inst.stopped}' but still runs 30 s later")
            print_stacks(inst)
            fail(f"{inst.server} did not exit after 'stopped'")
        if rc != 0:
            fail(f"{inst.server} exited with {rc}: {inst.stderr()}")
        expect = f"stopped {inst.server} billing {len(inst.billing)} audit {len(inst.audit)}"
        if inst.stopped != expect:
            fail(f"{inst.server} said '{inst.stopped}', expected '{expect}'")


def kill_all(instances):
    """What still runs is killed (a failed test's leftovers)."""
    for inst in instances:
        if inst and inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait()
