#!/usr/bin/python3
"""python3-qpid-proton doing what bench_amqp's raw client does: one
connection, an unsettled sender of durable ~100-byte messages (sends while
the link has credit, counts accepted outcomes) and a receiver with credit
CREDIT that accepts each message. Prints messages per second from the first
send to the last receive. Run with /usr/bin/python3 (Debian's module).

  bench_amqp_py.py URL TARGET SOURCE N CREDIT
"""
import sys
import time

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container


class Bench(MessagingHandler):
    def __init__(self, url, target, source, n, credit):
        super().__init__(prefetch=credit, auto_accept=True)
        self.url, self.target, self.source, self.n = url, target, source, n
        self.sent = self.received = 0
        self.t_first = self.t_last = None
        self.payload = b"x" * 100

    def on_start(self, event):
        conn = event.container.connect(self.url)
        event.container.create_receiver(conn, self.source)

    def on_link_opened(self, event):
        # Send once the receiver's queue exists (on Artemis, a message sent
        # to a multicast address without a queue is dropped).
        if event.receiver:
            event.container.create_sender(event.connection, self.target)

    def on_sendable(self, event):
        while event.sender.credit and self.sent < self.n:
            if self.t_first is None:
                self.t_first = time.monotonic()
            event.sender.send(Message(id=self.sent, body=self.payload, durable=True))
            self.sent += 1

    def on_message(self, event):
        self.received += 1
        if self.received == self.n:
            self.t_last = time.monotonic()
            event.connection.close()


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    b = Bench(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]))
    Container(b).run()
    if b.t_last is None:
        return 1
    print("%.0f" % (b.n / (b.t_last - b.t_first)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
