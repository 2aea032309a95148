"""The controller's gate with leader election: a standby queues nothing and arms no timer; a new
leader queues every BackgroundJob it knows; losing the lead closes the gate and drops timers."""

from __future__ import annotations

import asyncio
from typing import Any

from bgjob.handlers import Controller


def test_standby_queues_nothing_and_a_new_leader_queues_every_known_object() -> None:
    async def scenario() -> None:
        kube: Any = object()  # never reached: no pass runs in this test
        controller = Controller(kube)
        try:
            controller.leading = False
            controller.synced.set()
            for name in ("a", "b"):
                controller.bgjobs[("ns", name)] = b"{}"
            await controller.reconcile(("ns", "a"))  # returns at once on a standby
            assert not controller.acting.is_set() and not controller.queue.pending
            assert not controller.queue.timers

            controller.start_leading()
            assert controller.acting.is_set()
            assert set(controller.queue.timers) == {("ns", "a"), ("ns", "b")}

            controller.stop_leading()  # before any timer fired
            assert not controller.acting.is_set() and not controller.queue.timers
            await controller.reconcile(("ns", "b"))
            assert not controller.queue.pending
        finally:
            controller.stop()

    asyncio.run(scenario())


def test_without_election_the_gate_opens_once_the_caches_synced() -> None:
    async def scenario() -> None:
        kube: Any = object()
        controller = Controller(kube)
        try:
            assert controller.leading and not controller.acting.is_set()
            controller.synced.set()  # what sync() does once every informer listed
            controller._open_gate()
            assert controller.acting.is_set()
        finally:
            controller.stop()

    asyncio.run(scenario())
