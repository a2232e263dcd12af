"""Prints, one per line, the names of the queues bound to an Artemis address,
asked of Artemis's own management (operation getQueueNames of resource
address.<ADDRESS>, over AMQP 1.0 to the management address).

  artemis_queues.py HOST PORT USER PASSWORD ADDRESS
"""
import json
import sys

from proton import Message
from proton.utils import BlockingConnection


def main(argv):
    host, port, user, password, address = argv[1:6]
    conn = BlockingConnection(f"{host}:{port}", user=user, password=password, timeout=20)
    try:
        replies = conn.create_receiver(None, dynamic=True)
        sender = conn.create_sender("activemq.management")
        sender.send(Message(body="[]", reply_to=replies.remote_source.address,
                            properties={"_AMQ_ResourceName": f"address.{address}",
                                        "_AMQ_OperationName": "getQueueNames"}))
        answer = replies.receive(timeout=20)
        replies.accept()
    finally:
        conn.close()
    if not (answer.properties or {}).get("_AMQ_OperationSucceeded"):
        print(f"management refused: {answer.body}", file=sys.stderr)
        return 1
    for name in json.loads(answer.body)[0]:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
