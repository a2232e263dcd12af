"""bench_amqp's aspyx-event run: a real aspyx-event 0.9.3 service sends N
events to itself through its own path (EventManager.send_event, its
AMQPProvider, an @event_listener) and prints messages per second from the
first send to the last receive. The sends run on the provider's thread
(see below). Run it with the virtual environment of
scripts/python-env.sh; bench_amqp does.

  bench_amqp_aspyx.py HOST PORT USER PASSWORD EVENT_NAME N
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

from proton import Endpoint
from proton.handlers import MessagingHandler

from aspyx.di import module, Environment, create
from aspyx_event import EventManager, event, event_listener, EventListener, EventModule, \
    AMQPProvider

HOST, PORT, USER, PASSWORD, NAME, N = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    sys.argv[4], sys.argv[5], int(sys.argv[6])

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
# aspyx.di warns that a module defined in __main__ has no package: expected here
logging.getLogger("aspyx.di").setLevel(logging.ERROR)


@dataclass
@event(name=NAME)
class BenchEvent:
    id: int
    text: str


class Count:
    n = 0
    last = 0.0
    done = threading.Event()


@event_listener(BenchEvent, name=f"{NAME}_listener")
class BenchListener(EventListener[BenchEvent]):
    def __init__(self):
        pass

    def on(self, event: BenchEvent):
        Count.n += 1          # one proton thread runs every listener call
        if Count.n == N:
            Count.last = time.monotonic()
            Count.done.set()


@module(imports=[EventModule])
class Module:
    def __init__(self):
        pass

    @create()
    def create_event_manager(self) -> EventManager:
        return EventManager(AMQPProvider(f"bench-{NAME}", host=HOST, port=PORT, user=USER,
                                         password=PASSWORD))


def main() -> int:
    environment = Environment(Module)
    manager = environment.get(EventManager)
    provider = manager.provider
    deadline = time.monotonic() + 30      # aspyx-event gives no attach signal
    while not (provider._receivers and
               all(r.state & Endpoint.REMOTE_ACTIVE for r in provider._receivers.values())):
        if time.monotonic() > deadline:
            print("receiver not attached", file=sys.stderr)
            return 1
        time.sleep(0.01)
    text = "x" * 86
    t0 = 0.0

    # send_event runs on the provider's proton thread: called from another
    # thread it races the container on proton's timer heap (aspyx-event
    # 0.9.3 is not thread-safe there) and a burst of sends breaks it.
    class SendAll(MessagingHandler):
        def on_timer_task(self, event):
            nonlocal t0
            t0 = time.monotonic()
            for i in range(N):
                manager.send_event(BenchEvent(i, text))

    provider.container.schedule(0, SendAll())
    ok = Count.done.wait(600)
    environment.destroy()
    provider.thread.join(10)
    if not ok:
        print(f"only {Count.n} of {N} events arrived", file=sys.stderr)
        return 1
    print("%.0f" % (N / (Count.last - t0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
