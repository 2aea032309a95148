"""``/readyz``'s rules with a clock the test sets: our own listing and kopf's requests."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bgjob import serving


def healthy_at(t: float) -> serving.Health:
    health = serving.Health()
    health.started.set()
    health.caches = asyncio.Event()
    health.caches.set()
    health.listed_at = t
    return health


@pytest.mark.parametrize(("name", "listed_ago", "kopf_error_ago", "ready"), [
    ("listed just now, kopf quiet", 0.0, None, True),
    ("last listing 19 s ago", 19.0, None, True),
    ("no listing for 21 s: unready well within 35 s", 21.0, None, False),
    ("kopf failed a request 3 s ago", 0.0, 3.0, False),
    ("kopf's last failure was 25 s ago: recovered", 0.0, 25.0, True),
])
def test_ready(name: str, listed_ago: float, kopf_error_ago: float | None, ready: bool) -> None:
    now = 1000.0
    health = healthy_at(now - listed_ago)
    if kopf_error_ago is not None:
        health.kopf_error_at = now - kopf_error_ago
        health.kopf_error = "Request attempt #1/9 failed; will retry"
    assert health.ready(now)[0] is ready, name


def test_kopfs_failed_requests_are_noted_and_others_are_not() -> None:
    health = healthy_at(45.0)
    handler = serving.KopfErrors(health, clock=lambda: 42.0)
    logger = logging.getLogger(serving.KOPF_CLIENT_LOGGERS + ".watching")
    logger.addHandler(handler)
    try:
        logger.warning("Ignoring an unsupported event type")  # not a failed request
        assert health.kopf_error_at is None
        logger.error("Request attempt #1/9 failed; will retry: GET /apis -> OSError")
        assert health.kopf_error_at == 42.0 and "attempt #1/9" in health.kopf_error
        assert health.ready(50.0) == (False, "kopf cannot reach the API server: "
                                      + health.kopf_error)
    finally:
        logger.removeHandler(handler)


def test_a_failed_request_logged_by_kopfs_observation_logger_makes_the_pod_unready() -> None:
    """As on the real node: kopf's start-up discovery could not resolve its server, and each
    failure came through kopf._core.reactor.observation; a handler error is not a request."""
    health = healthy_at(45.0)
    handler = serving.KopfErrors.attach(health)
    handler.clock = lambda: 42.0
    try:
        logging.getLogger("kopf.objects").error("Handler 'event' failed with an exception")
        assert health.kopf_error_at is None
        logging.getLogger("kopf._core.reactor.observation").error(
            "Request attempt #5/9 failed; will retry: GET https://kubernetes.default.svc/apis "
            "-> ClientConnectorDNSError")
        assert health.kopf_error_at == 42.0
        assert health.ready(50.0)[0] is False
    finally:
        logging.getLogger(serving.KOPF_LOGGER).removeHandler(handler)
