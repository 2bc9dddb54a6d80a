"""GET /metrics in Prometheus text format, and the daemon's log lines (text or JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Daemon, create_ws
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition (which must parse), by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def own_daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


def test_metrics_count_workspaces_operations_requests_and_janitor_runs(own_daemon: Daemon, name: str) -> None:
    with own_daemon.client() as api:
        create_ws(api, name)
        assert api.get("/api/v1/workspaces/no-such-workspace").status_code == 404
        api.get(f"/api/v1/workspaces/{name}")
        time.sleep(1.5)  # the janitor runs every second in tests
        response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)

    assert found[("vmhost_workspaces", (("status", "running"),))] == 1
    assert found[("vmhost_workspaces", (("status", "error"),))] == 0
    assert found[("vmhost_operation_duration_seconds_count", (("result", "succeeded"), ("type", "create")))] == 1
    assert found[("vmhost_operation_duration_seconds_sum", (("result", "succeeded"), ("type", "create")))] > 0
    assert found[("vmhost_operation_duration_seconds_bucket",
                  (("le", "+Inf"), ("result", "succeeded"), ("type", "create")))] == 1
    route = "/api/v1/workspaces/{ref}"
    assert found[("vmhost_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1
    assert found[("vmhost_http_requests_total", (("method", "POST"), ("route", "/api/v1/workspaces"),
                                                 ("status", "202")))] == 1
    assert ("vmhost_http_request_duration_seconds_count", (("method", "GET"), ("route", route))) in found
    assert not any(name == "vmhost_http_requests_total" and dict(labels)["route"].endswith("no-such-workspace")
                   for name, labels in found)  # route templates, never raw paths
    assert found[("vmhost_worker_runs_total", (("worker", "janitor"),))] >= 1


def test_metrics_label_the_spec_and_the_docs_by_their_route(make_daemon: Any) -> None:
    with make_daemon().client() as api:  # a daemon of its own: others' tests send 413s to paths nothing serves
        assert api.get("/openapi.json").status_code == 200
        api.get("/docs")
        found = samples(api.get("/metrics").text)
    spec_requests = ("vmhost_http_requests_total", (("method", "GET"), ("route", "/openapi.json"), ("status", "200")))
    assert found[spec_requests] >= 1
    unmatched = [labels for name, labels in found
                 if name == "vmhost_http_requests_total" and dict(labels)["route"] == "unmatched"]
    assert all(dict(labels)["status"] == "404" for labels in unmatched), unmatched  # only paths nothing serves


def test_metrics_need_an_admin(daemon: Daemon) -> None:
    with daemon.tcp() as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    with daemon.tcp(token=daemon.token("metrics-user")) as user:
        assert user.get("/metrics").status_code == 403
    with daemon.tcp(token=daemon.token("prometheus", admin=True, scope="read")) as prometheus:
        response = prometheus.get("/metrics")
    assert response.status_code == 200
    assert "vmhost_workspaces" in response.text


def test_json_logs_are_one_object_a_line(make_daemon: Callable[..., Daemon], name: str) -> None:
    daemon = make_daemon({"VMHOST_LOG_FORMAT": "json"})
    with daemon.client() as api:
        create_ws(api, name)
    daemon.stop()
    lines = [line for line in daemon.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    messages = [e["message"] for e in entries]
    assert any(m.startswith("listening on unix:") for m in messages)
    assert any(m.startswith("vmhost ") and m.endswith(" serving") for m in messages)
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # uvicorn's own lines too


def test_text_logs_keep_a_traceback_on_one_line() -> None:
    import logging

    from vmhost.daemon.logs import TEXT_FORMAT, OneLineFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("vmhost", logging.ERROR, __file__, 1, "it failed", None,
                                   exc_info=__import__("sys").exc_info())
    line = OneLineFormatter(TEXT_FORMAT).format(record)
    assert "\n" not in line
    assert "it failed" in line and "ValueError: boom" in line


def test_bad_log_format_is_refused_with_the_setting_named(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon({"VMHOST_LOG_FORMAT": "xml"}, start=False)
    with pytest.raises(RuntimeError, match="bad value 'xml' for log_format"):
        daemon.start()
