"""The benchmark suite's own fixture and reference app still fit extauth.

The suite is run by hand, never by CI; this keeps it from rotting in between:
its fixture seeds a database through extauth's store, and its two references
(the denominators of the ratios: the one that reuses extauth's domain, and the
bare one that shares no code with extauth) must answer exactly as extauth does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from benchmarks import bare_app, reference_app, run
from extauth.app import create_app
from extauth.settings import load_settings
from tests.fake_provider import FakeProvider


@pytest.mark.parametrize("scenario", ["list", "nolink", "bad", "missing", "unknown", "health",
                                      "handoff", "handoff-bad"])
def test_reference_answers_like_extauth(tmp_path: Path, fake: FakeProvider,
                                        scenario: str) -> None:
    db, config = tmp_path / "bench.db", tmp_path / "bench.yaml"
    tokens = run.seed(db)
    run.write_config(config, fake.url)
    settings = load_settings(database=str(db), config=str(config))
    # The provider knows the seeded token: the hand-off hands it out.
    fake.access["gho_bench_linked_fake"] = "octocat"
    path, headers = {
        "list": (run.API, {"Coder-Session-Token": tokens["list"]}),
        "nolink": (f"{run.API}/fake", {"Coder-Session-Token": tokens["nolink"]}),
        "bad": (run.API, {"Coder-Session-Token": tokens["bad"]}),
        "missing": (run.API, {}),
        "unknown": (f"{run.API}/nope", {"Coder-Session-Token": tokens["nolink"]}),
        "health": ("/healthz", {}),
        "handoff": (f"{run.HANDOFF}?id=fake&match=", {"Coder-Session-Token": tokens["agent"]}),
        "handoff-bad": (f"{run.HANDOFF}?id=fake", {"Coder-Session-Token": "not-a-uuid"}),
    }[scenario]
    answers = []
    apps = (create_app(settings), reference_app.create_app(settings),
            bare_app.create_app(str(db), config, settings.base_url()))
    for app in apps:
        with TestClient(app) as client:
            r = client.get(path, headers=headers)
            answers.append((r.status_code, r.headers.get("content-type"),
                            r.headers.get("www-authenticate"), r.headers.get("cache-control"),
                            r.content))
    assert answers[0] == answers[1] == answers[2]
    if scenario == "handoff":
        assert b'"access_token": "gho_bench_linked_fake"' in answers[0][-1]
    assert answers[0][0] == {"list": 200, "nolink": 200, "bad": 401, "missing": 401,
                             "unknown": 404, "health": 200, "handoff": 200,
                             "handoff-bad": 401}[scenario]
