"""The benchmark suite's own fixture and reference app still fit extauth.

The suite is run by hand, never by CI; this keeps it from rotting in between:
its fixture seeds a database through extauth's store, and its two references
(the denominators of the ratios: the one that reuses extauth's domain, and the
bare one that shares no code with extauth) must answer exactly as extauth does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from benchmarks import bare_app, reference_app, run
from extauth.app import create_app
from extauth.settings import load_settings
from extauth.store import open_store
from tests.fake_provider import FakeProvider


def _apps(database: str, config: Path) -> list[Any]:
    """extauth, the reference that reuses its domain, and the bare reference."""
    settings = load_settings(database=database, config=str(config))
    return [create_app(settings), reference_app.create_app(settings),
            bare_app.create_app(database, config, settings.base_url())]


@pytest.mark.parametrize("scenario", ["list", "list-refused", "empty", "nolink", "linked",
                                      "bad", "missing", "unknown", "health", "handoff",
                                      "handoff-bad"])
def test_the_references_answer_like_extauth(tmp_path: Path, fake: FakeProvider, database: str,
                                            scenario: str) -> None:
    config = tmp_path / "bench.yaml"
    tokens = run.seed(database)
    run.write_config(config, fake.url)
    if scenario != "list-refused":
        # The provider knows the seeded tokens: the links validate.
        for name, providers in (("list", run.LINKED), ("linked", ("fake",))):
            for pid in providers:
                fake.access[f"gho_bench_{name}_{pid}"] = "octocat"
    path, headers = {
        "list": (run.API, {"Coder-Session-Token": tokens["list"]}),
        "list-refused": (run.API, {"Coder-Session-Token": tokens["list"]}),
        "empty": (run.API, {"Coder-Session-Token": tokens["nolink"]}),
        "nolink": (f"{run.API}/fake", {"Coder-Session-Token": tokens["nolink"]}),
        "linked": (f"{run.API}/fake", {"Coder-Session-Token": tokens["linked"]}),
        "bad": (run.API, {"Coder-Session-Token": tokens["bad"]}),
        "missing": (run.API, {}),
        "unknown": (f"{run.API}/nope", {"Coder-Session-Token": tokens["nolink"]}),
        "health": ("/healthz", {}),
        "handoff": (f"{run.HANDOFF}?id=fake&match=", {"Coder-Session-Token": tokens["agent"]}),
        "handoff-bad": (f"{run.HANDOFF}?id=fake", {"Coder-Session-Token": "not-a-uuid"}),
    }[scenario]
    answers = []
    for app in _apps(database, config):
        with TestClient(app) as client:
            r = client.get(path, headers=headers)
            answers.append((r.status_code, r.headers.get("content-type"),
                            r.headers.get("www-authenticate"), r.headers.get("cache-control"),
                            r.content))
    assert answers[0] == answers[1] == answers[2]
    body = answers[0][-1]
    assert answers[0][0] == {"list": 200, "list-refused": 200, "empty": 200, "nolink": 200,
                             "linked": 200, "bad": 401, "missing": 401, "unknown": 404,
                             "health": 200, "handoff": 200, "handoff-bad": 401}[scenario]
    if scenario == "handoff":
        assert b'"access_token": "gho_bench_linked_fake"' in body
    if scenario in ("list", "list-refused"):
        assert body.count(b'"authenticated": true') == (3 if scenario == "list" else 0)
    if scenario == "linked":
        assert b'"login": "octocat"' in body


def test_the_references_link_by_the_device_flow_like_extauth(
        tmp_path: Path, fake: FakeProvider, database: str) -> None:
    config = tmp_path / "bench.yaml"
    tokens = run.seed(database)
    run.write_config(config, fake.url)
    fake.auto_approve = True
    headers = {"Coder-Session-Token": tokens["device"]}
    store = open_store(database)
    user = store.get_user("bench-device")
    assert user is not None
    shapes = []
    try:
        for app in _apps(database, config):
            with TestClient(app) as client:
                started = client.get(f"{run.API}/fake/device", headers=headers)
                assert started.status_code == 200, started.text
                code = started.json()["device_code"]
                # Someone else's code is refused alike.
                other = client.post(f"{run.API}/fake/device", json={"device_code": code},
                                    headers={"Coder-Session-Token": tokens["nolink"]})
                done = client.post(f"{run.API}/fake/device", json={"device_code": code},
                                   headers=headers)
            link = store.get_link(user.id, "fake")
            assert link is not None and link.access_token, type(app)
            store.delete_link(user.id, "fake")
            shapes.append((started.headers["content-type"],
                           {k: type(v) for k, v in started.json().items()},
                           other.status_code, other.json(), done.status_code, done.content))
    finally:
        store.close()
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0][2:] == (400, {"message": "Failed to exchange device code.",
                                   "detail": "invalid_grant"}, 204, b"")
