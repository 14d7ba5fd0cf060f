"""Prometheus metrics, on a listener of their own (``extauth serve
--metrics-address HOST:PORT``), never on the API's port.

With ``--workers N`` the API is served by N processes, and one scrape must
see them all. So the metrics use prometheus-client's multiprocess mode: every
process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``, a
directory ``extauth serve`` makes at start and removes at exit, and the
listener, a thread of the ``serve`` process (the workers' parent, or the one
worker), adds them up on each scrape. prometheus-client chooses where values
live when it is first imported, so it is imported by ``enable()`` only, once
the directory is set.

The rest of extauth calls the hooks below (``http_request``,
``provider_call``, ``audit_event``, ``token_read``); they do nothing until
``enable()``. No label carries a user, a token or a URL: operations are the
spec's operationIds, providers the configured ids.

``extauth_links`` is not kept by the processes: the listener reads it from the
database on each scrape, from counts per provider and state that the
database's triggers keep (``link_counts``), a few rows however many links.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from extauth.settings import split_address
from extauth.store import Store, StoreError

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The kinds of provider call (``provider_call``'s ``kind``).
KINDS = ("device", "exchange", "refresh", "validate", "revoke", "installations")
# Provider calls take tens of milliseconds to the whole timeout (5 s by default).
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A Unix time and not a number of seconds: larger than any delay a provider gives.
_EPOCH_THRESHOLD = 10**9


class _Instruments:
    """The metrics every server process updates."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # registry=None: in multiprocess mode the listener collects the values
        # from the files, not from a registry of this process.
        self.requests: Counter = Counter(
            "extauth_http_requests", "API requests answered, by operationId and HTTP status.",
            ["operation", "status"], registry=None)
        self.request_seconds: Histogram = Histogram(
            "extauth_http_request_duration_seconds",
            "Time to answer API requests, by operationId.", ["operation"], registry=None)
        self.provider_requests: Counter = Counter(
            "extauth_provider_requests",
            "Calls to providers, by provider id, kind and HTTP status (0: no answer).",
            ["provider", "kind", "status_code"], registry=None)
        self.provider_seconds: Histogram = Histogram(
            "extauth_provider_request_duration_seconds",
            "Time provider calls took, answered or not, by provider id and kind.",
            ["provider", "kind"], buckets=PROVIDER_BUCKETS, registry=None)
        self.refreshes: Counter = Counter(
            "extauth_refresh", "Token refreshes by outcome: ok, superseded, transient, "
            "refused (our client), permanent (the refresh token is dead).",
            ["provider", "outcome"], registry=None)
        self.rate_remaining: Gauge = Gauge(
            "extauth_provider_rate_limit_remaining",
            "Requests left in the provider's rate-limit window, from its latest answer "
            "that said (X-RateLimit-Remaining, RateLimit-Remaining).",
            ["provider"], multiprocess_mode="mostrecent", registry=None)
        self.rate_reset: Gauge = Gauge(
            "extauth_provider_rate_limit_reset_timestamp_seconds",
            "When the provider's rate-limit window resets (Unix time), from its latest "
            "answer that said (X-RateLimit-Reset, RateLimit-Reset).",
            ["provider"], multiprocess_mode="mostrecent", registry=None)
        self.token_reads: Counter = Counter(
            "extauth_token_reads", "Access tokens handed out to clients, by provider id.",
            ["provider"], registry=None)


_on: _Instruments | None = None
_enabling = threading.Lock()


def enable() -> None:
    """Start recording, in the directory the server made (``PROMETHEUS_MULTIPROC_DIR``)."""
    global _on
    with _enabling:
        if _on is not None:
            return
        if not os.environ.get(MULTIPROC_ENV):
            raise RuntimeError(f"metrics need {MULTIPROC_ENV}; 'extauth serve "
                               "--metrics-address' sets it")
        _on = _Instruments()


def enabled() -> bool:
    return _on is not None


# -- hooks ---------------------------------------------------------------------------


def http_request(operation: str, status: int, seconds: float) -> None:
    """An API request was answered (status 0: no answer was sent)."""
    if _on is None:
        return
    _on.requests.labels(operation, str(status)).inc()
    _on.request_seconds.labels(operation).observe(seconds)


def provider_call(provider: str, kind: str, status_code: int, seconds: float,
                  headers: Mapping[str, str] | None = None) -> None:
    """A call to a provider ended: answered with ``status_code`` (0: no answer)."""
    if _on is None:
        return
    _on.provider_requests.labels(provider, kind, str(status_code)).inc()
    _on.provider_seconds.labels(provider, kind).observe(seconds)
    limits = rate_limit(headers or {}, status_code, time.time())
    if limits is not None:
        remaining, reset_at = limits
        _on.rate_remaining.labels(provider).set(remaining)
        if not math.isnan(reset_at):
            _on.rate_reset.labels(provider).set(reset_at)


def audit_event(action: str, outcome: str, provider: str) -> None:
    """An event of the audit trail; refresh outcomes are counted."""
    if _on is None or action != "refresh":
        return
    _on.refreshes.labels(provider, outcome).inc()


def token_read(provider: str) -> None:
    """An access token of ``provider`` was handed out to a client (the hand-off
    endpoint and the git credential helper call this once per token given)."""
    if _on is None:
        return
    _on.token_reads.labels(provider).inc()


def rate_limit(headers: Mapping[str, str], status_code: int,
               now: float) -> tuple[float, float] | None:
    """(requests remaining, reset as a Unix time or NaN) from a provider's answer:
    GitHub's ``X-RateLimit-*``, GitLab's (and the IETF draft's) ``RateLimit-*``;
    None when the answer says nothing usable.

    ``RateLimit-Reset`` is a Unix time at GitHub and GitLab and a number of
    seconds in the IETF draft: a value too small to be a recent Unix time is
    taken as seconds from now. GitHub counts unauthenticated calls apart, and
    answers 0 everywhere on endpoints without a limit: neither is recorded.
    """
    if status_code == 401:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for prefix in ("x-ratelimit-", "ratelimit-"):
        remaining = lowered.get(prefix + "remaining", "").strip()
        if not remaining.isdigit():
            continue
        if lowered.get(prefix + "limit", "").strip() == "0":
            return None
        reset = lowered.get(prefix + "reset", "").strip()
        reset_at = math.nan
        if reset.isdigit():
            reset_at = float(reset) if int(reset) >= _EPOCH_THRESHOLD else now + int(reset)
        return float(remaining), reset_at
    return None


# -- the listener --------------------------------------------------------------------


class LinkCounts:
    """``extauth_links{provider,state}``, read from the database at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "extauth_links", "Stored links by provider id and state: active, or "
            "refresh_failed (the provider refused the refresh token: the user must link "
            "again). Counts the whole database, whichever instance is scraped.",
            labels=["provider", "state"])
        try:
            counts = self.store.link_counts()
        except (sqlite3.Error, StoreError):
            # The other metrics still go out; /readyz says what the database has.
            counts = {}
        finally:
            # Each scrape is served by a new thread: do not leave its connection open.
            self.store.close_thread()
        for (provider, state), links in sorted(counts.items()):
            family.add_metric([provider, state], links)
        yield family


@contextmanager
def listening(address: str, store: Store) -> Iterator[None]:
    """Record metrics in a new multiprocess directory and serve them on ``address``
    until the block ends; then stop the listener and remove the directory. Link
    counts are read from ``store``."""
    host, port = split_address(address)
    directory = tempfile.mkdtemp(prefix="extauth-metrics-")
    # Set before prometheus-client is imported, here and in every worker
    # (they inherit the environment).
    os.environ[MULTIPROC_ENV] = directory
    server: Any = None
    try:
        enable()
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        registry.register(LinkCounts(store))
        server, _ = start_http_server(port, host, registry)
        yield
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
