"""How provider requests travel (``extauth/providers/transport.py``), against
the fake provider on 127.0.0.1: what is sent, through which proxy, with
which certificates trusted, and what is made of answers that are
compressed, redirected, or never come."""

from __future__ import annotations

import gzip
import ipaddress
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from extauth.providers.transport import MAX_ANSWER_BYTES
from tests.conftest import Api, link
from tests.fake_provider import Answer, FakeProvider
from tests.live import free_port

FAKE = "/api/v2/external-auth/fake"
USER = {"id": 7, "login": "gzipped", "name": "G"}


def test_compressed_answers_are_decoded(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", Answer(raw=gzip.compress(json.dumps(USER).encode()),
                                   content_type="application/json",
                                   headers={"Content-Encoding": "gzip"}))
    body = api.get(FAKE, headers=headers).json()
    assert (body["authenticated"], body["user"]["login"]) == (True, "gzipped")
    assert "gzip" in fake.seen("validate")[-1].headers["accept-encoding"]


def test_redirects_are_not_followed(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", Answer(status=302, headers={"Location": f"{fake.url}/user"}))
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert "HTTP 302" in r.json()["message"]
    assert len(fake.seen("validate")) == 1


def test_an_unreachable_provider_is_named(make_api, fake: FakeProvider) -> None:
    closed = free_port()  # nobody listens there
    api = make_api(fake.config(validate_url=f"http://127.0.0.1:{closed}/user"))
    headers = api.login()
    link(api, fake)
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert r.json()["message"] == "Could not reach provider 'fake' for the token validation."
    assert "ConnectError" in r.json()["detail"]


def test_form_requests_are_sent_as_built(api: Api, fake: FakeProvider) -> None:
    assert api.get(f"{FAKE}/device", headers=api.login()).status_code == 200
    seen = fake.seen("device")[0]
    assert seen.headers["user-agent"] == "extauth"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.headers["host"] == f"127.0.0.1:{fake.port}"
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["content-length"] == str(len(urlencode(seen.form)))
    assert seen.headers["authorization"].startswith("Basic ")  # the client, authenticated


def test_the_environments_proxy_is_used(make_api, fake: FakeProvider, monkeypatch) -> None:
    # The provider's host does not resolve: only the proxy (the fake itself,
    # which takes the absolute-form request) can answer.
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = make_api(fake.config(validate_url="http://provider.invalid/user"))
    headers = api.login()
    link(api, fake)
    body = api.get(FAKE, headers=headers).json()
    assert body["authenticated"] is True
    assert len(fake.seen("validate")) == 1


def test_no_proxy_is_honoured(make_api, fake: FakeProvider, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    api = make_api(fake.config())
    headers = api.login()
    link(api, fake)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "extauth test provider")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeProvider, Path]]:
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    fake = FakeProvider(tls=(str(cert), str(key))).start()
    yield fake, cert
    fake.stop()


def test_an_untrusted_certificate_is_refused(make_api, tls_fake, monkeypatch) -> None:
    fake, _ = tls_fake
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    api = make_api(fake.config())
    headers = api.login()
    link(api, fake)
    before = len(fake.seen("validate"))
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert r.json()["message"] == "Could not reach provider 'fake' for the token validation."
    assert "CERTIFICATE_VERIFY_FAILED" in r.json()["detail"]
    assert len(fake.seen("validate")) == before


def test_a_certificate_trusted_through_ssl_cert_file_is_accepted(
    make_api, tls_fake, monkeypatch
) -> None:
    fake, cert = tls_fake
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    api = make_api(fake.config())
    headers = api.login()
    link(api, fake)
    before = len(fake.seen("validate"))
    body = api.get(FAKE, headers=headers).json()
    assert body["authenticated"] is True
    assert len(fake.seen("validate")) == before + 1


def test_an_oversized_answer_is_refused(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", Answer(raw=b"x" * (MAX_ANSWER_BYTES + 1),
                                   content_type="application/json"))
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert r.json()["message"] == "Could not reach provider 'fake' for the token validation."
    assert "larger than 2 MiB" in r.json()["detail"]


def test_a_compressed_answer_counts_once_decoded(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    bomb = gzip.compress(b"{" + b" " * (MAX_ANSWER_BYTES + 1) + b"}")
    fake.script("validate", Answer(raw=bomb, content_type="application/json",
                                   headers={"Content-Encoding": "gzip"}))
    assert len(bomb) < MAX_ANSWER_BYTES // 100
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert "larger than 2 MiB" in r.json()["detail"]


def test_the_timeout_bounds_the_whole_call_not_each_read(make_api, fake: FakeProvider) -> None:
    """A provider that answers at once and then drips its body a byte every 0.1 s
    (each read well within the timeout) is cut off at the timeout."""
    api = make_api(fake.config(), provider_timeout=0.5)
    headers = api.login()
    link(api, fake)
    dripping = json.dumps({**USER, "name": "x" * 40}).encode()  # about 6 s of body
    fake.script("validate", Answer(raw=dripping, content_type="application/json", drip=0.1))
    started = time.monotonic()
    r = api.get(FAKE, headers=headers)
    took = time.monotonic() - started
    assert r.status_code == 502
    assert r.json()["message"] == "Provider 'fake' did not answer the token validation within 0.5s."
    assert took < 3.0, f"the call lasted {took:.1f}s against a 0.5 s deadline"
