"""Tokens encrypted at rest: AES-256-GCM, key ids, rotation, missing keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from extauth.cli import main
from extauth.crypto import Cipher, DecryptError, KeyConfigError, key_id, keys_from_env, parse_keys
from extauth.links import expires_at
from tests.conftest import expire, started_device_code
from tests.fake_provider import Answer, FakeProvider

K1, K2 = os.urandom(32), os.urandom(32)
B1, B2 = base64.b64encode(K1).decode(), base64.b64encode(K2).decode()


def test_round_trip_is_bound_to_its_context() -> None:
    c = Cipher((K1,))
    sealed = c.encrypt("gho_secret", "external_auth_links/1/github/access_token")
    assert sealed.startswith(key_id(K1) + ":") and "gho_secret" not in sealed
    assert c.decrypt(sealed, key_id(K1), "external_auth_links/1/github/access_token") == (
        "gho_secret")
    with pytest.raises(DecryptError, match="does not decrypt"):
        c.decrypt(sealed, key_id(K1), "external_auth_links/2/github/access_token")


def test_every_key_decrypts_the_first_encrypts() -> None:
    old = Cipher((K1,)).encrypt("t", "ctx")
    rotated = Cipher((K2, K1))
    assert rotated.decrypt(old, key_id(K1), "ctx") == "t"
    assert rotated.encrypt("t", "ctx").startswith(key_id(K2) + ":")
    with pytest.raises(DecryptError, match=f"key {key_id(K1)}, which is not configured"):
        Cipher((K2,)).decrypt(old, key_id(K1), "ctx")


def test_without_keys_values_stay_plain() -> None:
    assert Cipher().encrypt("t", "ctx") == "t"
    assert Cipher().decrypt("t", "", "ctx") == "t"


@pytest.mark.parametrize("text, message", [
    ("not-base64!", "key 1 is not valid base64"),
    (base64.b64encode(b"short").decode(), "key 1 is 5 bytes; AES-256 needs 32"),
])
def test_bad_keys_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message):
        parse_keys(text, "EXTAUTH_ENCRYPTION_KEYS")


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    assert keys_from_env({"EXTAUTH_ENCRYPTION_KEYS": f"{B1}, {B2}"}) == (K1, K2)
    assert keys_from_env({"CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS": B2}) == (K2,)
    key_file = tmp_path / "keys"
    key_file.write_text(f"{B2}\n{B1}\n")
    assert keys_from_env({"EXTAUTH_ENCRYPTION_KEY_FILE": str(key_file)}) == (K2, K1)
    assert keys_from_env({}) == ()


def _files(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.sqlite
def test_no_token_is_ever_in_the_file_in_plain_text(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(extra_token_keys=["authed_user"]), encryption_keys=(K1,))
    headers = api.login()
    fake.script("token", Answer(json={"access_token": "gho_PLAINACCESS1", "expires_in": 60,
                                      "refresh_token": "ghr_PLAINREFRESH1",
                                      "authed_user": {"access_token": "xoxp-PLAINUSER1"}}))
    assert api.post("/api/v2/external-auth/fake/device", headers=headers,
                    json={"device_code": started_device_code(api, headers)}).status_code == 204
    expire(api)
    fake.script("token", Answer(json={"access_token": "gho_PLAINACCESS2",
                                      "refresh_token": "ghr_PLAINREFRESH2"}))
    fake.access["gho_PLAINACCESS2"] = "octocat"
    assert api.get("/api/v2/external-auth/fake", headers=headers).json()["authenticated"]
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and stored.refresh_token == "ghr_PLAINREFRESH2"
    assert stored.extra == {"authed_user": {"access_token": "xoxp-PLAINUSER1"}}
    data = _files(api.settings.db_path)
    for secret in (b"PLAINACCESS", b"PLAINREFRESH", b"PLAINUSER"):
        assert secret not in data


def test_a_link_whose_key_is_missing_fails_alone(make_api, fake: FakeProvider,
                                                 database: str, store_at) -> None:
    old = store_at(database, Cipher((K1,)))
    old.migrate()
    alice = old.create_user("alice")
    access, refresh = fake.issue()
    old.upsert_link(alice.id, "fake", access, refresh, expires_at(3600))
    api = make_api(fake.config(), fake.config(id="other"), encryption_keys=(K2,))
    headers = api.login("alice")
    api.store.upsert_link(alice.id, "other", *fake.issue(), expires_at(3600))
    links = {x["provider_id"]: x for x in api.get("/api/v2/external-auth",
                                                  headers=headers).json()["links"]}
    assert links["other"]["authenticated"] is True
    assert links["fake"]["authenticated"] is False
    assert f"key {key_id(K1)}, which is not configured" in links["fake"]["validate_error"]
    assert api.get("/api/v2/external-auth/fake", headers=headers).json()["authenticated"] is False
    r = api.delete("/api/v2/external-auth/fake", headers=headers)
    assert r.status_code == 200 and r.json()["token_revoked"] is False
    assert "not configured" in r.json()["token_revocation_error"]


def _cli(*args: str, keys: str = "") -> object:
    env = {"EXTAUTH_ENCRYPTION_KEYS": keys} if keys else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_rotate_status_and_decrypt(database: str, store_at) -> None:
    db = database
    store = store_at(db, Cipher((K1,)))
    store.migrate()
    for i in range(7):
        user = store.create_user(f"u{i}")
        store.upsert_link(user.id, "p", f"at-SECRET-{i}", f"rt-SECRET-{i}", None)
    r = _cli("keys", "status", "--db", db, keys=f"{B2},{B1}")
    assert f"{key_id(K1)}\t7\tconfigured" in r.stdout  # type: ignore[attr-defined]
    assert f"{key_id(K2)}\t0\tprimary" in r.stdout  # type: ignore[attr-defined]
    r = _cli("keys", "rotate", "--db", db, "--batch", "3", keys=f"{B2},{B1}")
    assert r.exit_code == 0  # type: ignore[attr-defined]
    assert "re-encrypted with key" in r.stderr and "7 link(s)" in r.stderr  # type: ignore
    assert store_at(db).key_counts() == {key_id(K2): 7}
    rotated = store_at(db, Cipher((K2,)))
    link = rotated.get_link(1, "p")
    assert link is not None and link.access_token == "at-SECRET-0"
    r = _cli("keys", "decrypt", "--db", db, keys=B2)
    assert r.exit_code == 0  # type: ignore[attr-defined]
    assert store_at(db).key_counts() == {"": 7}
    assert store_at(db).get_link(1, "p").refresh_token == "rt-SECRET-0"  # type: ignore[union-attr]


def test_rotate_reports_links_under_a_missing_key(database: str, store_at) -> None:
    db = database
    store = store_at(db, Cipher((K1,)))
    store.migrate()
    store.upsert_link(store.create_user("u").id, "p", "at", "rt", None)
    r = _cli("keys", "rotate", "--db", db, keys=B2)
    assert r.exit_code == 1  # type: ignore[attr-defined]
    assert "1 link(s) are under a key that is not configured" in r.stderr  # type: ignore
    r = _cli("keys", "status", "--db", db, keys=B2)
    assert "MISSING" in r.stdout  # type: ignore[attr-defined]


def test_rotate_pages_past_a_whole_batch_it_cannot_decrypt(database: str, store_at) -> None:
    """Rows under a lost key come first in key order and fill a whole batch: the
    rows after them are still re-encrypted, and the lost ones are named."""
    db = database
    K3 = os.urandom(32)  # the key that was lost
    lost, kept = store_at(db, Cipher((K3,))), store_at(db, Cipher((K1,)))
    lost.migrate()
    users = [lost.create_user(f"u{i}") for i in range(5)]
    for user in users[:3]:
        lost.upsert_link(user.id, "p", "at-lost", "rt-lost", None)
    for user in users[3:]:
        kept.upsert_link(user.id, "p", "at-kept", "rt-kept", None)
    r = _cli("keys", "rotate", "--db", db, "--batch", "2", keys=f"{B2},{B1}")
    assert r.exit_code == 1  # type: ignore[attr-defined]
    assert "re-encrypted with key" in r.stderr and " 2 link(s)" in r.stderr  # type: ignore
    for name in ("u0", "u1", "u2"):
        assert f"cannot decrypt: user {name!r}, provider 'p'" in r.stderr  # type: ignore
    assert "3 link(s) are under a key that is not configured" in r.stderr  # type: ignore
    assert store_at(db).key_counts() == {key_id(K3): 3, key_id(K2): 2}


def test_rotate_without_a_key_is_an_error(tmp_path: Path) -> None:
    r = _cli("keys", "rotate", "--db", str(tmp_path / "k.db"))
    assert r.exit_code == 1  # type: ignore[attr-defined]
    assert "EXTAUTH_ENCRYPTION_KEYS" in r.stderr  # type: ignore[attr-defined]


def test_a_bad_key_stops_the_server_config(tmp_path: Path) -> None:
    r = _cli("config", "check", keys="nope")
    assert r.exit_code == 1  # type: ignore[attr-defined]
    assert "EXTAUTH_ENCRYPTION_KEYS: key 1 is 3 bytes" in r.stderr  # type: ignore[attr-defined]


