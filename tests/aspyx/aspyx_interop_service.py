"""A Python service written with aspyx-event 0.9.3, the way aspyx-event's own
README and tests write one: an aspyx dependency-injection module that creates
the EventManager with the AMQPProvider, an @event dataclass, an
@event_listener, and an @envelope_pipeline that sets a `session` header on
every send and reads it on every receive.

It is one side of tests/aspyx/test_aspyx_interop.c (the other side is a C
service written with eventwire). Run it with the virtual environment that
scripts/python-env.sh creates:

  aspyx_interop_service.py HOST PORT USER PASSWORD RUN COUNT

  RUN    makes the event and listener names unique:
           event AspyxToC_RUN  (this service sends it; the C service listens)
           event CToAspyx_RUN  (the C service sends it; listener AspyxListener_RUN)
  COUNT  events sent, and events expected (ids 0..COUNT-1)

Protocol on stdin/stdout with the C side (one line each):
  out "ready"           once the listener's receiver is attached (aspyx-event
                        gives no signal for that: its receiver link is looked at)
  then it sends COUNT events and collects the other side's

The sends run on the provider's proton thread (one task handed to it while
it is idle). aspyx-event 0.9.3's send_event is not thread-safe: it calls the
proton Container's schedule() from the calling thread while the container
runs in its own, and a burst of sends from the main thread breaks proton's
timer heap ("RuntimeError: list changed size during iteration" in the
container thread; sends are lost and the container stops).
  in  "done"            the C side has every event this service sent
  out one JSON line     what arrived: counts by id, sessions seen
Exit status 0 only when every id arrived exactly as sent, each with the
C side's session header, and the provider stopped cleanly.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass

from proton import Endpoint
from proton.handlers import MessagingHandler

from aspyx.di import module, Environment, create
from aspyx.exception import ExceptionManager, handle
from aspyx_event import EventManager, event, envelope_pipeline, AbstractEnvelopePipeline, \
    event_listener, EventListener, EventModule, AMQPProvider

HOST, PORT, USER, PASSWORD, RUN, COUNT = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    sys.argv[4], sys.argv[5], int(sys.argv[6])

SESSION_OUT = "aspyx-session ü"   # this service's session header
SESSION_IN = "c-session 漢字"      # what the C service sets
TEXT = "from aspyx é 🚀"           # JSON escapes (ensure_ascii) both ways

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
# aspyx.di warns that a module defined in __main__ has no package: expected here
logging.getLogger("aspyx.di").setLevel(logging.ERROR)

# the session of the event being handled, set by the pipeline, read by the listener
current_session: contextvars.ContextVar[str] = contextvars.ContextVar("session", default="")


@dataclass
@event(name=f"AspyxToC_{RUN}")
class AspyxToC:
    id: int
    text: str


@dataclass
@event(name=f"CToAspyx_{RUN}")
class CToAspyx:
    id: int
    text: str


@envelope_pipeline()
class SessionPipeline(AbstractEnvelopePipeline):
    def __init__(self):
        super().__init__()

    def send(self, envelope: EventManager.Envelope, event_descriptor: EventManager.EventDescriptor):
        envelope.set("session", SESSION_OUT)
        self.proceed_send(envelope, event_descriptor)

    def handle(self, envelope: EventManager.Envelope, event_listener_descriptor: EventManager.EventListenerDescriptor):
        current_session.set(envelope.get("session"))
        self.proceed_handle(envelope, event_listener_descriptor)


class Received:
    lock = threading.Lock()
    all_arrived = threading.Event()
    ids: dict[int, int] = {}          # id -> times received
    bad: list[str] = []               # first few mismatches


@event_listener(CToAspyx, name=f"AspyxListener_{RUN}")
class AspyxListener(EventListener[CToAspyx]):
    def __init__(self):
        pass

    def on(self, event: CToAspyx):
        session = current_session.get()
        with Received.lock:
            Received.ids[event.id] = Received.ids.get(event.id, 0) + 1
            if (session != SESSION_IN or event.text != f"from C {event.id} ü 漢字 🚀") \
                    and len(Received.bad) < 5:
                Received.bad.append(f"id {event.id}: text {event.text!r} session {session!r}")
            if len(Received.ids) == COUNT:
                Received.all_arrived.set()


@module(imports=[EventModule])
class Module:
    def __init__(self):
        pass

    @handle()
    def handle_exception(self, exception: Exception):
        print(f"aspyx service: {exception!r}", file=sys.stderr, flush=True)

    def create_exception_manager(self):
        exception_manager = ExceptionManager()
        exception_manager.collect_handlers(self)
        return exception_manager

    @create()
    def create_event_manager(self) -> EventManager:
        return EventManager(AMQPProvider(f"aspyx-{RUN}", host=HOST, port=PORT, user=USER,
                                         password=PASSWORD),
                            exception_manager=self.create_exception_manager())


def receiver_attached(provider: AMQPProvider, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receivers = list(provider._receivers.values())
        if receivers and all(r.state & Endpoint.REMOTE_ACTIVE for r in receivers):
            return True
        time.sleep(0.05)
    return False


def main() -> int:
    environment = Environment(Module)
    manager = environment.get(EventManager)
    provider = manager.provider
    if not receiver_attached(provider, 30):
        print("aspyx service: the listener's receiver was not attached within 30 s",
              file=sys.stderr, flush=True)
        return 1
    class SendAll(MessagingHandler):
        def on_timer_task(self, event):
            for i in range(COUNT):
                manager.send_event(AspyxToC(i, TEXT))

    provider.container.schedule(0, SendAll())
    print("ready", flush=True)

    arrived = Received.all_arrived.wait(120)
    line = sys.stdin.readline().strip()   # "done" once the C side has every event
    environment.destroy()                 # stops the provider: links, connection, container
    provider.thread.join(10)

    with Received.lock:
        dup = sum(1 for n in Received.ids.values() if n > 1)
        missing = [i for i in range(COUNT) if i not in Received.ids]
        result = {"received": len(Received.ids), "duplicates": dup,
                  "missing_first": missing[:10], "bad": Received.bad,
                  "c_side": line, "stopped": not provider.thread.is_alive()}
    print(json.dumps(result, ensure_ascii=False), flush=True)
    ok = arrived and not missing and not Received.bad and line == "done" and result["stopped"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
