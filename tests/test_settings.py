"""Provider config from YAML and Coder's env variables; errors name provider and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extauth.settings import ConfigError, build_provider, load_providers, load_settings

GENERIC = {
    "CODER_EXTERNAL_AUTH_0_ID": "corp",
    "CODER_EXTERNAL_AUTH_0_TYPE": "keycloak",
    "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "cid",
    "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET": "shh-secret",
    "CODER_EXTERNAL_AUTH_0_AUTH_URL": "https://sso.example.com/auth",
    "CODER_EXTERNAL_AUTH_0_TOKEN_URL": "https://sso.example.com/token",
    "CODER_EXTERNAL_AUTH_0_VALIDATE_URL": "https://sso.example.com/userinfo",
    "CODER_EXTERNAL_AUTH_0_DEVICE_FLOW": "true",
    "CODER_EXTERNAL_AUTH_0_DEVICE_CODE_URL": "https://sso.example.com/device",
    "CODER_EXTERNAL_AUTH_0_REVOKE_URL": "https://sso.example.com/revoke",
    "CODER_EXTERNAL_AUTH_0_SCOPES": "openid profile offline_access",
    "CODER_EXTERNAL_AUTH_0_NO_REFRESH": "false",
    "CODER_EXTERNAL_AUTH_0_DISPLAY_NAME": "Corp SSO",
    "CODER_EXTERNAL_AUTH_0_DISPLAY_ICON": "/icon/corp.svg",
}


def test_generic_provider_from_coder_env_variables() -> None:
    [p] = load_providers(None, GENERIC)
    assert (p.id, p.type, p.client_id, p.client_secret) == ("corp", "keycloak", "cid", "shh-secret")
    assert p.token_url == "https://sso.example.com/token"
    assert p.device_flow is True and p.device_code_url == "https://sso.example.com/device"
    assert p.revoke_url == "https://sso.example.com/revoke"
    assert p.scopes == ("openid", "profile", "offline_access")
    assert (p.display_name, p.display_icon) == ("Corp SSO", "/icon/corp.svg")
    assert p.pkce_methods == ("S256",)
    assert "shh-secret" not in repr(p)
    assert p.masked()["client_secret"] == "****"


def test_yaml_file_and_env_are_merged(tmp_path: Path) -> None:
    config = tmp_path / "extauth.yaml"
    config.write_text(
        "external_auth:\n"
        "  - id: other\n    type: gitea-like\n    client_id: x\n"
        "    token_url: https://g.example/token\n    scopes: [a, b]\n"
        "    extra_token_keys: 'k1 k2'\n"
    )
    ps = load_providers(config, GENERIC)
    assert [p.id for p in ps] == ["other", "corp"]
    assert ps[0].scopes == ("a", "b") and ps[0].extra_token_keys == ("k1", "k2")
    assert ps[0].display_name == "gitea-like"
    assert ps[0].display_icon == "/emojis/1f511.png"


def test_id_defaults_to_the_type_as_written() -> None:
    """Ids are path segments and part of redirect URIs registered at providers:
    they keep their case, as in Coder; the type is looked up in any case."""
    p = build_provider({"type": "MyOAuth", "client_id": "x", "token_url": "https://x/t"}, "t")
    assert (p.id, p.type, p.display_name) == ("MyOAuth", "myoauth", "MyOAuth")
    p = build_provider({"type": "GitHub", "client_id": "x"}, "t")
    assert (p.id, p.type, p.display_name) == ("GitHub", "github", "GitHub")
    p = build_provider({"id": "Corp-SSO", "type": "x", "client_id": "x",
                        "token_url": "https://x/t"}, "t")
    assert p.id == "Corp-SSO"


def test_the_legacy_bitbucket_type_keeps_its_id() -> None:
    p = build_provider({"type": "BitBucket", "client_id": "x"}, "t")
    assert (p.id, p.type, p.display_name) == ("BitBucket", "bitbucket-cloud", "BitBucket")


def test_a_provider_with_an_id_and_no_type_is_generic() -> None:
    [p] = load_providers(None, {"CODER_EXTERNAL_AUTH_0_ID": "corp",
                                "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "c",
                                "CODER_EXTERNAL_AUTH_0_TOKEN_URL": "https://x/t"})
    assert (p.id, p.type, p.display_name, p.unusable) == ("corp", "", "corp", "")


def test_legacy_gitauth_prefix_is_read() -> None:
    [p] = load_providers(None, {"CODER_GITAUTH_0_TYPE": "x", "CODER_GITAUTH_0_CLIENT_ID": "c",
                                "CODER_GITAUTH_0_TOKEN_URL": "https://x/t"})
    assert p.id == "x"


@pytest.mark.parametrize("env, message", [
    ({"CODER_EXTERNAL_AUTH_0_TYPE": "x", "CODER_EXTERNAL_AUTH_0_TOKEN_URL": "https://x/t"},
     "CODER_EXTERNAL_AUTH_0 (id 'x'): 'client_id' must be provided"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_ID": "bad id!"}, "'id' 'bad id!' is not a valid id"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_REGEX": "(unclosed"}, "'regex' does not compile"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_DEVICE_CODE_URL": ""},
     "'device_flow' is true but 'device_code_url' is not set"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_DEVICE_FLOW": "maybe"},
     "CODER_EXTERNAL_AUTH_0_DEVICE_FLOW has value 'maybe'. Not a valid boolean"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_NO_REFRESH": "yes"},
     "CODER_EXTERNAL_AUTH_0_NO_REFRESH has value 'yes'. Not a valid boolean"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_NO_REFRESH": ""},
     "CODER_EXTERNAL_AUTH_0_NO_REFRESH has value ''. Not a valid boolean"),
    ({**GENERIC, **{k.replace("_0_", "_1_"): v for k, v in GENERIC.items()}},
     "CODER_EXTERNAL_AUTH_1: multiple external auth providers exist with the id 'corp'"),
    ({**{k.replace("_0_", "_2_"): v for k, v in GENERIC.items()}},
     "provider number 0 is missing"),
])
def test_config_errors_name_the_provider_and_the_key(env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_providers(None, env)
    assert message in str(err.value)
    assert "shh-secret" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("external_auth: {}", "'external_auth' must be a list"),
    ("- 1", "expected a mapping"),
    ("providers: []", "unknown top-level key 'providers'"),
    ("external_auth: [[1]]", "external_auth[0] must be a mapping"),
    ("external_auth:\n  - type: x\n    client_id: [1, 2]\n", "'client_id' must be a string"),
    ("external_auth:\n  - {type: x, client_id: c, device_flow: maybe}\n",
     "external_auth[0]: 'device_flow' has value 'maybe'. Not a valid boolean"),
    ("a: [", "not valid YAML"),
])
def test_config_file_errors(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_providers(config, {})
    assert message in str(err.value)
    assert str(config) in str(err.value)


def test_settings_precedence_cli_over_env_over_default(tmp_path: Path) -> None:
    env = {"EXTAUTH_PORT": "9000", "EXTAUTH_DB": str(tmp_path / "env.db"),
           "EXTAUTH_HOST": "0.0.0.0"}
    s = load_settings(env, port=7000, config=None)
    assert (s.port, s.db_path, s.host) == (7000, tmp_path / "env.db", "0.0.0.0")
    assert s.base_url() == "http://127.0.0.1:7000"
    assert load_settings({}, providers=()).port == 8080


def test_settings_reject_a_bad_port() -> None:
    with pytest.raises(ConfigError, match="EXTAUTH_PORT has value 'eighty'. Not a valid int"):
        load_settings({"EXTAUTH_PORT": "eighty"}, providers=())


@pytest.mark.parametrize("value, stock", [("1", True), ("true", True), ("0", False), ("", False)])
def test_stock_connexion_from_the_environment(value: str, stock: bool) -> None:
    assert load_settings({"EXTAUTH_STOCK_CONNEXION": value}, providers=()).stock_connexion is stock
    assert load_settings({}, providers=()).stock_connexion is False


# -- what Coder starts with, extauth starts with ---------------------------------------


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_booleans_are_read_as_go_reads_them_true(value: str) -> None:
    [p] = load_providers(None, {**GENERIC, "CODER_EXTERNAL_AUTH_0_NO_REFRESH": value})
    assert p.no_refresh is True


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False"])
def test_booleans_are_read_as_go_reads_them_false(value: str) -> None:
    [p] = load_providers(None, {**GENERIC, "CODER_EXTERNAL_AUTH_0_DEVICE_FLOW": value})
    assert p.device_flow is False


NEWER_CODER = {
    "CODER_EXTERNAL_AUTH_0_API_BASE_URL": "https://api.github.com",
    "CODER_EXTERNAL_AUTH_0_MCP_URL": "https://api.githubcopilot.com/mcp/",
    "CODER_EXTERNAL_AUTH_0_MCP_TOOL_ALLOW_REGEX": ".*",
    "CODER_EXTERNAL_AUTH_0_MCP_TOOL_DENY_REGEX": "^delete_",
}


def test_keys_extauth_does_not_know_are_ignored_with_one_warning_each() -> None:
    [p] = load_providers(None, {**GENERIC, **NEWER_CODER,
                                "CODER_EXTERNAL_AUTH_0_CLIENT_SECERT": "typo"})
    assert p.id == "corp" and not p.unusable
    newer = "is a key of newer Coder releases that extauth does not use; ignored"
    assert p.warnings == (
        f"CODER_EXTERNAL_AUTH_0_API_BASE_URL (provider 'corp') {newer}",
        "CODER_EXTERNAL_AUTH_0_CLIENT_SECERT (provider 'corp') is not a key extauth knows; "
        "ignored (did you mean 'client_secret'?)",
        f"CODER_EXTERNAL_AUTH_0_MCP_TOOL_ALLOW_REGEX (provider 'corp') {newer}",
        f"CODER_EXTERNAL_AUTH_0_MCP_TOOL_DENY_REGEX (provider 'corp') {newer}",
        f"CODER_EXTERNAL_AUTH_0_MCP_URL (provider 'corp') {newer}",
    )
    assert "typo" not in " ".join(p.warnings)


def test_unknown_keys_of_a_file_are_ignored_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "extauth.yaml"
    config.write_text("external_auth:\n  - {type: github, client_id: c, colour: red}\n")
    [p] = load_providers(config, {})
    assert p.warnings == (f"{config}: external_auth[0]: 'colour' (provider 'github') is not "
                          "a key extauth knows; ignored",)


BB_SERVER = {"CODER_EXTERNAL_AUTH_0_TYPE": "bitbucket-server",
             "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "c"}


@pytest.mark.parametrize("env, reason", [
    (BB_SERVER,
     "it has no token URL: set CODER_EXTERNAL_AUTH_0_AUTH_URL, from which type "
     "'bitbucket-server' derives it, or CODER_EXTERNAL_AUTH_0_TOKEN_URL"),
    ({**BB_SERVER, "CODER_EXTERNAL_AUTH_0_TYPE": "jfrog"},
     "it has no token URL: set CODER_EXTERNAL_AUTH_0_AUTH_URL, from which type 'jfrog' "
     "derives it, or CODER_EXTERNAL_AUTH_0_TOKEN_URL"),
    ({**BB_SERVER, "CODER_EXTERNAL_AUTH_0_TYPE": "keycloak"},
     "it has no token URL: set CODER_EXTERNAL_AUTH_0_TOKEN_URL"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_TOKEN_URL": "ftp://x"},
     "CODER_EXTERNAL_AUTH_0_TOKEN_URL has value 'ftp://x', which is not an http(s) URL"),
    ({**GENERIC, "CODER_EXTERNAL_AUTH_0_PKCE_METHODS": "S512"},
     "CODER_EXTERNAL_AUTH_0_PKCE_METHODS has 'S512'; allowed are S256, plain, none"),
])
def test_a_provider_that_cannot_work_is_kept_as_unusable(env: dict, reason: str) -> None:
    github = {"CODER_EXTERNAL_AUTH_1_TYPE": "github", "CODER_EXTERNAL_AUTH_1_CLIENT_ID": "g"}
    first, second = load_providers(None, {**env, **github})
    assert first.unusable == reason
    assert (second.id, second.unusable) == ("github", "")
    settings = load_settings({**env, **github})
    assert settings.config_warnings() == [f"provider {first.id!r} is unusable: {reason}"]


# -- operations: the metrics listener and the shutdown grace period ---------------------


def test_metrics_address_and_shutdown_seconds_from_env() -> None:
    s = load_settings({"EXTAUTH_METRICS_ADDRESS": "[::1]:2112",
                       "EXTAUTH_SHUTDOWN_SECONDS": "25"}, providers=())
    assert (s.metrics_address, s.shutdown_seconds) == ("[::1]:2112", 25.0)
    assert load_settings({}, providers=()).metrics_address == ""


@pytest.mark.parametrize("env, message", [
    ({"EXTAUTH_METRICS_ADDRESS": "2112"}, "metrics address '2112' is not HOST:PORT"),
    ({"EXTAUTH_METRICS_ADDRESS": "localhost:http"}, "is not HOST:PORT"),
    ({"EXTAUTH_METRICS_ADDRESS": "127.0.0.1:70000"}, "is not HOST:PORT"),
    ({"EXTAUTH_METRICS_ADDRESS": "127.0.0.1:8080"}, "needs a port of its own, not the API's"),
    ({"EXTAUTH_SHUTDOWN_SECONDS": "-1"}, "Not a number of seconds"),
    ({"EXTAUTH_SHUTDOWN_SECONDS": "soon"}, "EXTAUTH_SHUTDOWN_SECONDS has value 'soon'"),
    ({"EXTAUTH_LOG_FORMAT": "xml"}, "EXTAUTH_LOG_FORMAT has value 'xml'. Use one of text, json"),
    ({"EXTAUTH_ACCESS_LOG": "maybe"}, "EXTAUTH_ACCESS_LOG has value 'maybe'. Not a valid boolean"),
    ({"EXTAUTH_DB_POOL_SIZE": "0"}, "EXTAUTH_DB_POOL_SIZE has value '0'. It must be 1 or more"),
    ({"EXTAUTH_DB_TIMEOUT": "0"}, "EXTAUTH_DB_TIMEOUT has value '0'. It must be more than 0"),
    ({"EXTAUTH_DB_TIMEOUT": "nan"}, "EXTAUTH_DB_TIMEOUT has value 'nan'. It must be more"),
    ({"EXTAUTH_PROVIDER_TIMEOUT": "-1"}, "EXTAUTH_PROVIDER_TIMEOUT has value '-1'. It must"),
])
def test_bad_operations_settings_name_the_culprit(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, providers=())


def test_log_settings_from_the_environment() -> None:
    s = load_settings({"EXTAUTH_LOG_FORMAT": "json", "EXTAUTH_ACCESS_LOG": "false"},
                      providers=())
    assert (s.log_format, s.access_log) == ("json", False)
    s = load_settings({"EXTAUTH_LOG_FORMAT": "json"}, providers=(), log_format="text",
                      access_log=True)  # the command line wins
    assert (s.log_format, s.access_log) == ("text", True)


def test_listen_seconds_from_the_environment() -> None:
    assert load_settings(env={}, providers=()).listen_seconds == 55.0
    assert load_settings(env={"EXTAUTH_LISTEN_SECONDS": "2.5"}, providers=()).listen_seconds == 2.5


@pytest.mark.parametrize("value, message", [
    ("soon", "EXTAUTH_LISTEN_SECONDS has value 'soon'. Not a valid float"),
    ("0", "EXTAUTH_LISTEN_SECONDS has value 0. It must be more than 0"),
])
def test_listen_seconds_must_be_a_positive_number(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env={"EXTAUTH_LISTEN_SECONDS": value}, providers=())


def test_a_grace_period_shorter_than_a_provider_call_is_warned_about() -> None:
    short = load_settings({"EXTAUTH_SHUTDOWN_SECONDS": "3"}, providers=())
    assert any("EXTAUTH_SHUTDOWN_SECONDS (3) is not longer than EXTAUTH_PROVIDER_TIMEOUT (5)"
               in w for w in short.config_warnings())
    assert load_settings({}, providers=()).config_warnings() == []
