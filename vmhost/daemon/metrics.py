"""Prometheus metrics for `GET /metrics`: workspaces by status and the warm pools (read at each scrape),
operations by type and result with their durations (from the store's events), HTTP requests by route
template and status (an ASGI middleware), and background worker runs. One registry per app."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vmhost.core.models import Event, OperationStatus, WorkspaceStatus
from vmhost.core.pools import Pools, PoolStatus
from vmhost.core.store import Store
from vmhost.errors import VmhostError

OPERATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class StateCollector(Collector):
    """Values read at scrape time: workspaces by status, the warm pools and the workers' run counts."""

    def __init__(self, store: Store, workers: Sequence[Any], pools: Pools | None) -> None:
        self.store = store
        self.workers = workers
        self.pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        workspaces = GaugeMetricFamily("vmhost_workspaces", "Workspaces by status", labels=["status"])
        counts = self.store.count_by_status()
        for status in WorkspaceStatus:
            workspaces.add_metric([status.value], counts.get(status.value, 0))
        yield workspaces
        if self.pools is not None:
            yield from self._pools(self.pools.status())
        runs = CounterMetricFamily("vmhost_worker_runs", "Runs of each background worker (the janitor's are "
                                   "its TTL sweeps)", labels=["worker"])
        for worker in self.workers:
            if hasattr(worker, "runs"):
                runs.add_metric([worker.name], worker.runs)
        yield runs


    @staticmethod
    def _pools(pools: Sequence[PoolStatus]) -> Iterable[GaugeMetricFamily]:
        for name, what in (("size", "Workspaces each template's warm pool keeps ready"),
                           ("ready", "Warm pool workspaces ready to be claimed"),
                           ("filling", "Warm pool workspaces being created and provisioned")):
            gauge = GaugeMetricFamily(f"vmhost_pool_{name}", what, labels=["template"])
            for pool in pools:
                gauge.add_metric([pool.template], getattr(pool, name))
            yield gauge


class Metrics:
    def __init__(self, store: Store, workers: Sequence[Any], pools: Pools | None = None) -> None:
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StateCollector(store, workers, pools))
        self.operations = Histogram("vmhost_operation_duration_seconds",
                                    "Finished operations by type and result, with how long they ran",
                                    ["type", "result"], buckets=OPERATION_BUCKETS, registry=self.registry)
        self.requests = Counter("vmhost_http_requests", "HTTP requests by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.request_seconds = Histogram("vmhost_http_request_duration_seconds",
                                         "HTTP request durations by method and route template",
                                         ["method", "route"], registry=self.registry)
        store.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        if event.type != "operation.status" or event.payload.get("status") not in (
                OperationStatus.SUCCEEDED.value, OperationStatus.FAILED.value):
            return
        try:
            operation = self.store.get_operation(event.payload["operation_id"])
        except VmhostError:
            return
        begun = operation.started_at or operation.created_at
        seconds = (operation.finished_at - begun).total_seconds() if operation.finished_at else 0.0
        self.operations.labels(operation.type, operation.status.value).observe(max(seconds, 0.0))


def route_template(scope: Scope) -> str:
    """The path template of the route that answered. FastAPI puts its own routes in the scope; the
    plain Starlette ones it adds itself (/openapi.json, /docs, /redoc) leave only their endpoint."""
    route = scope.get("route")
    if route is None and "endpoint" in scope:
        route = next((r for r in scope["app"].routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    return getattr(route, "path", None) or "unmatched"


class RequestMetrics:
    """ASGI middleware counting HTTP requests by method, route template (not the raw path, so ids do
    not explode the series) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # bounded: routes x methods x statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope)
            count, seconds = self._series(scope["method"], route, status)
            count.inc()
            seconds.observe(time.perf_counter() - started)

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The counter and histogram children of a method, route and status (looking them up through
        `labels()` each time costs more than the rest of this middleware)."""
        key = (method, route, status)
        series = self._children.get(key)
        if series is None:
            series = (self.metrics.requests.labels(method, route, str(status)),
                      self.metrics.request_seconds.labels(method, route))
            self._children[key] = series
        return series
