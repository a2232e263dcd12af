#!/usr/bin/python3
"""A stand-in for aspyx-event on RabbitMQ: it puts on the wire what an
aspyx-event service puts there, with Debian's python3-qpid-proton (the
library aspyx-event uses). Run it with /usr/bin/python3 (a pyenv python3
cannot see Debian's modules).

Real aspyx-event cannot serve here: its AMQPProvider sends to the bare
event name and consumes from the bare "E::L", which RabbitMQ 3.10's AMQP 1.0
plugin reads as two unrelated queues of the default exchange (it declares
queue "E" for the sender and queue "E::L" for the receiver), so its events
never reach any listener, not even its own. The real aspyx-event service
runs against Artemis in tests/aspyx.

  aspyx_wire_standin.py send URL ADDRESS JSON [KEY=VALUE ...]
      sends JSON as an amqp-value string with the application properties,
      no content type and no subject (aspyx-event's form), waits for the
      broker's accepted outcome
  aspyx_wire_standin.py receive URL ADDRESS TIMEOUT_S
      takes one message, accepts it, prints one JSON line describing it
"""
import json
import sys

from proton import Message
from proton.utils import BlockingConnection


def send(url, address, body, props):
    conn = BlockingConnection(url, timeout=20)
    try:
        sender = conn.create_sender(address)
        # BlockingSender.send waits for the outcome and raises unless accepted.
        sender.send(Message(body=body, properties=props))
    finally:
        conn.close()


def receive(url, address, timeout):
    conn = BlockingConnection(url, timeout=timeout)
    try:
        receiver = conn.create_receiver(address, credit=1)
        msg = receiver.receive(timeout=timeout)
        receiver.accept()
    finally:
        conn.close()
    body = msg.body
    out = {
        "body_type": type(body).__name__,
        "body": body if isinstance(body, str) else repr(body),
        "json": json.loads(body) if isinstance(body, str) else None,
        "properties": {str(k): str(v) for k, v in (msg.properties or {}).items()},
        "subject": msg.subject,
        "content_type": msg.content_type,
        "durable": msg.durable,
    }
    print(json.dumps(out, ensure_ascii=False), flush=True)


def main(argv):
    if len(argv) >= 4 and argv[1] == "send":
        props = dict(kv.split("=", 1) for kv in argv[5:])
        send(argv[2], argv[3], argv[4], props)
        return 0
    if len(argv) == 5 and argv[1] == "receive":
        receive(argv[2], argv[3], float(argv[4]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
