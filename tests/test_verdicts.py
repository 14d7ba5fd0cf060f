"""Provider verdicts on tokens: coalesced, briefly reused, never stale after
extauth itself changed or removed the link."""

from __future__ import annotations

import asyncio

import pytest

from extauth.verdicts import Verdicts
from tests.conftest import Api, link
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"


def test_concurrent_identical_calls_share_one() -> None:
    calls = 0

    async def main() -> list[str]:
        gate = asyncio.Event()

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await gate.wait()
            return "valid"

        v: Verdicts[str] = Verdicts(ttl=0)
        waiters = [asyncio.ensure_future(v.get("k", compute)) for _ in range(10)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # one caller leaving does not cancel the others
        gate.set()
        return await asyncio.gather(*waiters[1:])

    assert asyncio.run(main()) == ["valid"] * 9
    assert calls == 1


def test_failures_are_not_kept() -> None:
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("provider down")

    async def main() -> None:
        v: Verdicts[str] = Verdicts(ttl=60)
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await v.get("k", compute)

    asyncio.run(main())
    assert calls == 2


def test_repeated_gets_within_the_window_ask_once(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    for _ in range(3):
        assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert len(fake.seen("validate")) == 1


def test_window_zero_asks_every_time(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), validate_cache_seconds=0)
    headers = api.login()
    link(api, fake)
    for _ in range(3):
        api.get(FAKE, headers=headers)
    assert len(fake.seen("validate")) == 3


def test_never_valid_after_unlink(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert api.delete(FAKE, headers=headers).status_code == 200
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False


def test_a_relinked_token_is_asked_about_again(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    link(api, fake)  # new tokens, new row version
    fake.script("validate", Answer(status=401, json={"message": "Bad credentials"}))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False
    assert len(fake.seen("validate")) == 2


def test_users_do_not_share_verdicts(api: Api, fake: FakeProvider) -> None:
    alice, bob = api.login("alice"), api.login("bob")
    link(api, fake, user="alice")
    assert api.get(FAKE, headers=alice).json()["authenticated"] is True
    assert api.get(FAKE, headers=bob).json()["authenticated"] is False


def test_a_link_made_again_after_unlink_is_asked_about_again(api: Api,
                                                             fake: FakeProvider) -> None:
    """A new row starts at version 1 again; the verdict must not carry over."""
    headers = api.login()
    link(api, fake)
    assert api.get(FAKE, headers=headers).json()["user"]["login"] == "octocat"
    assert api.delete(FAKE, headers=headers).status_code == 200
    access, refresh = fake.issue(login="hubot")
    api.store.upsert_link(api.user_id("alice"), "fake", access, refresh, None)
    assert api.store.get_link(api.user_id("alice"), "fake").version == 1  # type: ignore[union-attr]
    body = api.get(FAKE, headers=headers).json()
    assert (body["authenticated"], body["user"]["login"]) == (True, "hubot")
    assert len(fake.seen("validate")) == 2
