"""Tries one aspyx-event provider against a broker: one aspyx service sends
one event to itself (an @event dataclass, an @event_listener, a session
pipeline, as aspyx-event's own tests write it) and reports what happened.
Not part of the test command: it is how the README's version table was
made. Run it with a virtual environment holding the version to try:

  probe_aspyx_event.py amqp|stomp HOST PORT USER PASSWORD

Prints one line: "works: ..." or "fails: <where>: <exception>", and exits
0 only when the event arrived with its session header. Understands both
aspyx-event designs (0.9.0-0.9.3: synchronous send, setup in the
EventManager's constructor; 0.9.4 on: asynchronous send and setup).
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import os
import sys
import threading
import traceback
from dataclasses import dataclass

PROTO, HOST, PORT, USER, PASSWORD = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
RUN = f"{os.getpid()}"
VERSION = importlib.metadata.version("aspyx-event")

stage = "import"
try:
    from aspyx.di import module, Environment, create
    from aspyx_event import EventManager, event, envelope_pipeline, AbstractEnvelopePipeline, \
        event_listener, EventListener, EventModule, AMQPProvider, StompProvider
except Exception as e:  # noqa: BLE001 - the point is to report it
    print(f"fails: {stage}: {e!r}")
    sys.exit(1)

ASYNC = inspect.iscoroutinefunction(EventManager.send_event)
arrived = threading.Event()
got: dict = {}


@dataclass
@event(name=f"Probe_{RUN}")
class ProbeEvent:
    id: int
    text: str


@envelope_pipeline()
class SessionPipeline(AbstractEnvelopePipeline):
    def __init__(self):
        super().__init__()

    if ASYNC:
        async def send(self, envelope, event_descriptor):
            envelope.set("session", "probe-session")
            await self.proceed_send(envelope, event_descriptor)
    else:
        def send(self, envelope, event_descriptor):
            envelope.set("session", "probe-session")
            self.proceed_send(envelope, event_descriptor)

        def handle(self, envelope, event_listener_descriptor):
            got["session"] = envelope.get("session")
            self.proceed_handle(envelope, event_listener_descriptor)


@event_listener(ProbeEvent, name=f"ProbeListener_{RUN}")
class ProbeListener(EventListener[ProbeEvent]):
    def __init__(self):
        pass

    def on(self, event: ProbeEvent):
        got["event"] = event
        arrived.set()


@module(imports=[EventModule])
class Module:
    def __init__(self):
        pass

    @create()
    def create_event_manager(self) -> EventManager:
        if PROTO == "amqp":
            provider = AMQPProvider(f"probe-{RUN}", host=HOST, port=PORT, user=USER, password=PASSWORD)
        else:
            provider = StompProvider(host=HOST, port=PORT, user=USER, password=PASSWORD)
        return EventManager(provider)


async def run_async(manager):
    global stage
    stage = "setup"
    if not getattr(manager, "_probe_setup", False) and hasattr(manager, "subscribe"):
        if not manager.subscriptions:
            await manager.setup()
    await asyncio.sleep(2)           # the provider gives no attach signal
    stage = "send_event"
    await manager.send_event(ProbeEvent(1, "probe é"))


def main() -> int:
    global stage
    try:
        stage = "Environment (provider, EventManager, listeners)"
        environment = Environment(Module)
        manager = environment.get(EventManager)
        if ASYNC:
            asyncio.run(run_async(manager))
        else:
            import time
            time.sleep(2)            # the provider gives no attach signal
            stage = "send_event"
            manager.send_event(ProbeEvent(1, "probe é"))
        stage = "receive"
        ok = arrived.wait(10)
    except Exception as e:  # noqa: BLE001
        tb = traceback.extract_tb(e.__traceback__)[-1]
        print(f"fails: {stage}: {type(e).__name__}: {e} "
              f"(at {os.path.basename(tb.filename)}:{tb.lineno} {tb.name})")
        return 1
    if not ok:
        print(f"fails: {stage}: no event within 10 s (session header seen: {got.get('session')!r})")
        return 1
    print(f"works: aspyx-event {VERSION} {PROTO}: event {got['event']} "
          f"session {got.get('session', '(no receive hook in this version)')!r}")
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)   # the providers' threads are not all daemons
