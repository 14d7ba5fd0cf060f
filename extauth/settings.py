"""Server settings and provider configs, loaded once at start and frozen.

Precedence: CLI option > environment > config file > default. Providers come
from the config file's ``external_auth:`` list and from Coder's
``CODER_EXTERNAL_AUTH_<n>_<KEY>`` variables (indexes contiguous from 0).

A configuration that Coder starts with starts extauth too. What Coder refuses
(no client id, a bad id, regex or boolean, a device flow without its URL,
duplicate ids) is a ``ConfigError``. A provider that Coder would start with
but that cannot work (no token URL, for example ``bitbucket-server`` without
``auth_url``) is kept and marked ``unusable``, with the reason; keys extauth
does not know are ignored, each with a warning.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from extauth.crypto import KeyConfigError, keys_from_env
from extauth.providers.presets import DERIVES_TOKEN_URL, apply_preset
from extauth.store import is_postgres, sqlite_path

# Coder's name rule for provider ids (httpapi.NameValid).
_ID_RE = re.compile(r"^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$")
_ID_MAX = 32
_ENV_PREFIXES = ("CODER_EXTERNAL_AUTH_", "CODER_GITAUTH_")
DEFAULT_ICON = "/emojis/1f511.png"


class ConfigError(Exception):
    """The configuration is invalid; the message names the provider and the key."""


@dataclass(frozen=True)
class ProviderConfig:
    """One external auth provider, after presets. Keys are Coder's."""

    id: str
    type: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    auth_url: str = ""
    token_url: str = ""
    validate_url: str = ""
    device_flow: bool = False
    device_code_url: str = ""
    revoke_url: str = ""
    app_install_url: str = ""
    app_installations_url: str = ""
    regex: str = ""
    scopes: tuple[str, ...] = ()
    extra_token_keys: tuple[str, ...] = ()
    no_refresh: bool = False
    display_name: str = ""
    display_icon: str = ""
    pkce_methods: tuple[str, ...] = ()
    # Not Coder keys: the provider's quirks, set by its preset (presets.py).
    # How the client authenticates at the token endpoint (RFC 6749 2.3.1):
    # "basic", or "post" for the secret in the form body.
    token_auth: str = "basic"
    # At the device endpoints: "client" as above, or "client_id" only (GitHub).
    device_auth: str = "client"
    # The code exchange: "standard", "azure-assertion" (Azure DevOps' JWT
    # assertion grant) or "bearer-secret" (JFrog's secret as a Bearer header).
    exchange: str = "standard"
    # Revocation: "rfc7009", or "github" (DELETE /applications/{id}/grant).
    revoke_style: str = "rfc7009"
    # Extra parameters of the authorize and token requests (Entra's resource).
    auth_params: tuple[tuple[str, str], ...] = ()
    # What the preset derived, for `extauth providers list`.
    notes: tuple[str, ...] = ()
    # Why the provider cannot work as configured; "" when it can. It is still
    # listed, and its operations answer 503 saying why.
    unusable: str = ""
    # Keys of its config that extauth does not know, each ignored with a warning.
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        secret = "****" if self.client_secret else ""
        return f"ProviderConfig(id={self.id!r}, type={self.type!r}, client_secret={secret!r})"

    def masked(self) -> dict[str, Any]:
        """The effective config as a dict, with the client secret masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "client_secret" and value:
                value = "****"
            if f.name == "auth_params":
                value = dict(value)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


_LIST_KEYS = {"scopes", "extra_token_keys", "pkce_methods"}
_BOOL_KEYS = {"device_flow", "no_refresh"}
_URL_KEYS = {
    "auth_url",
    "token_url",
    "validate_url",
    "device_code_url",
    "revoke_url",
    "app_install_url",
    "app_installations_url",
}
# Keys of newer Coder releases for features extauth does not have (the AI
# bridge's MCP server, the provider's REST API base).
_CODER_ONLY = {"api_base_url", "mcp_url", "mcp_tool_allow_regex", "mcp_tool_deny_regex"}
_QUIRKS = {"token_auth", "device_auth", "exchange", "revoke_style", "auth_params"}
_DERIVED = {"notes", "unusable", "warnings"}
_KEYS = {f.name for f in fields(ProviderConfig)} - _QUIRKS - _DERIVED


# --log-format: lines for people, or one JSON object per line.
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    """Everything the server needs, explicit; never read from the environment later."""

    # --db: a SQLite file path (or sqlite:///path), or a postgresql:// URL.
    database: str = field(default="extauth.db", repr=False)  # a URL may hold a password
    # PostgreSQL's connection pool: connections per process, and how long a
    # query waits for one (and for the database) before answering 503.
    db_pool_size: int = 10
    db_timeout: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8080
    access_url: str = ""
    workers: int = 1
    providers: tuple[ProviderConfig, ...] = ()
    demo: bool = False
    provider_timeout: float = 5.0
    validate_responses: bool = False
    max_body_bytes: int = 64 * 1024
    # Seconds that transient refresh failures are retried for, per refresh.
    refresh_retry_seconds: float = 10.0
    audit_retention_days: int = 90
    # Seconds a provider's verdict on a token is reused (0: ask every time).
    validate_cache_seconds: float = 5.0
    # Seconds before an unconfirmed revocation is tried again (doubling).
    revoke_retry_seconds: float = 30.0
    # --log-format and --access-log: how the server's lines look, and whether
    # each request gets one.
    log_format: str = "text"
    access_log: bool = True
    # "host:port" of the Prometheus listener ("": no metrics).
    metrics_address: str = ""
    # Seconds that requests, refreshes and revocations in flight get to finish
    # once the server is asked to stop.
    shutdown_seconds: float = 10.0
    # Seconds a `listen` request to the token hand-off waits for a link.
    listen_seconds: float = 55.0
    # AES-256-GCM keys for tokens at rest; the first encrypts. Never printed.
    encryption_keys: tuple[bytes, ...] = field(default=(), repr=False)
    # Build the app from connexion's own classes, without extauth's cheaper
    # ones (extauth/_connexion.py): the way out if a connexion upgrade breaks them.
    stock_connexion: bool = False

    def config_warnings(self) -> list[str]:
        """What the operator should know about the config: ignored keys, providers
        that cannot work as configured, a grace period too short for a refresh."""
        out = [w for p in self.providers for w in p.warnings]
        out += [f"provider {p.id!r} is unusable: {p.unusable}"
                for p in self.providers if p.unusable]
        if self.shutdown_seconds <= self.provider_timeout:
            out.append(
                f"EXTAUTH_SHUTDOWN_SECONDS ({self.shutdown_seconds:g}) is not longer than "
                f"EXTAUTH_PROVIDER_TIMEOUT ({self.provider_timeout:g}): a refresh the "
                "provider is answering when the server stops may be cut off after the "
                "provider rotated its tokens")
        return out

    @property
    def db_path(self) -> Path:
        """The SQLite file of ``database`` (not for PostgreSQL)."""
        if is_postgres(self.database):
            raise ValueError("the database is PostgreSQL, not a file")
        return sqlite_path(self.database)

    def provider(self, provider_id: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.id == provider_id:
                return p
        return None

    def base_url(self) -> str:
        """The public base URL: ``access_url`` or one built from host and port."""
        if self.access_url:
            return self.access_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def _as_list(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise ConfigError(f"{name} must be a list of strings or a space-separated string")


# Go's strconv.ParseBool, with which Coder reads its booleans.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(name: str, value: Any) -> bool:
    """A boolean as Go's ``strconv.ParseBool`` reads it (or YAML's own); anything
    else is a ``ConfigError`` naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _TRUE:
        return True
    if isinstance(value, str) and value in _FALSE:
        return False
    raise ConfigError(f"{name} has value {value!r}. Not a valid boolean: use one of "
                      "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False")


def _valid_url(value: str) -> bool:
    return bool(re.match(r"^https?://[^/\s]+", value))


def _speller(where: str, from_env: bool) -> Callable[[str], str]:
    """How a key is named in messages: as the env variable, or as the file's key."""
    if from_env:
        return lambda key: f"{where}_{key.upper()}"
    return lambda key: f"{where}: {key!r}"


def build_provider(raw: Mapping[str, Any], where: str, from_env: bool = False) -> ProviderConfig:
    """Turn one raw provider mapping (YAML or env) into a checked ProviderConfig.

    ``where`` names its source (``CODER_EXTERNAL_AUTH_0``, or the file and the
    list item). Raises ``ConfigError`` for what Coder refuses too; otherwise
    the provider may come back ``unusable``, or with ``warnings``.
    """
    spell = _speller(where, from_env)
    values: dict[str, Any] = {}
    unknown = sorted(key for key in raw if key not in _KEYS)
    for key, value in raw.items():
        if value is None or key not in _KEYS:
            continue
        if key in _LIST_KEYS:
            values[key] = _as_list(spell(key), value)
        elif key in _BOOL_KEYS:
            values[key] = parse_bool(spell(key), value)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            values[key] = str(value).strip()
        else:
            raise ConfigError(f"{spell(key)} must be a string")
    written_type = values.get("type", "")
    # Coder: the id defaults to the type as written; presets ignore its case.
    pid = values.get("id") or written_type
    if not pid:
        raise ConfigError(f"{where}: 'type' must be provided (github, gitlab, ... or any name)")
    values["id"] = pid
    values["type"] = written_type.lower()
    values = apply_preset(values)
    where = f"{where} (id {pid!r})"
    if not _ID_RE.match(pid) or len(pid) > _ID_MAX:
        raise ConfigError(
            f"{where}: 'id' {pid!r} is not a valid id: use letters, digits and single hyphens, "
            f"at most {_ID_MAX} characters"
        )
    if not values.get("client_id"):
        raise ConfigError(f"{where}: 'client_id' must be provided")
    if values.get("regex"):
        try:
            re.compile(values["regex"])
        except re.error as exc:
            raise ConfigError(f"{where}: 'regex' does not compile: {exc}") from None
    if values.get("device_flow") and not values.get("device_code_url"):
        raise ConfigError(f"{where}: 'device_flow' is true but 'device_code_url' is not set")
    values.setdefault("display_name", written_type or pid)
    values.setdefault("display_icon", DEFAULT_ICON)
    warnings = tuple(f"{spell(key)} (provider {pid!r}) {_unknown(key)}" for key in unknown)
    return ProviderConfig(**values, unusable="; ".join(_problems(values, spell)),
                          warnings=warnings)


def _unknown(key: str) -> str:
    if key in _CODER_ONLY:
        return "is a key of newer Coder releases that extauth does not use; ignored"
    hint = "".join(f" (did you mean {m!r}?)"
                   for m in difflib.get_close_matches(key, _KEYS, 1, cutoff=0.8))
    return f"is not a key extauth knows; ignored{hint}"


def _problems(values: Mapping[str, Any], spell: Callable[[str], str]) -> list[str]:
    """Why a provider that Coder would start with cannot work."""
    problems = [f"{spell(key)} has value {values[key]!r}, which is not an http(s) URL"
                for key in sorted(_URL_KEYS) if values.get(key) and not _valid_url(values[key])]
    if not values.get("token_url"):
        if values["type"] in DERIVES_TOKEN_URL:
            problems.append(f"it has no token URL: set {spell('auth_url')}, from which "
                            f"type {values['type']!r} derives it, or {spell('token_url')}")
        else:
            problems.append(f"it has no token URL: set {spell('token_url')}")
    bad = [m for m in values.get("pkce_methods", ()) if m not in ("S256", "plain", "none")]
    if bad:
        problems.append(f"{spell('pkce_methods')} has {bad[0]!r}; allowed are S256, plain, none")
    return problems


def providers_from_env(env: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Raw provider mappings from ``CODER_EXTERNAL_AUTH_<n>_<KEY>`` variables."""
    found: list[tuple[str, dict[str, Any]]] = []
    for prefix in _ENV_PREFIXES:
        by_index: dict[int, dict[str, Any]] = {}
        for name, value in env.items():
            m = re.match(rf"^{prefix}(\d+)_([A-Za-z0-9_]+)$", name)
            if m:
                by_index.setdefault(int(m.group(1)), {})[m.group(2).lower()] = value
        for i, index in enumerate(sorted(by_index)):
            if index != i:
                raise ConfigError(
                    f"{prefix}{i}_*: provider number {i} is missing; indexes must be "
                    f"contiguous from 0 (found {prefix}{index}_*)"
                )
            found.append((f"{prefix}{index}", by_index[index]))
    return found


def providers_from_file(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Raw provider mappings from a YAML file's ``external_auth:`` list."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with an 'external_auth' list")
    unknown = sorted(set(doc) - {"external_auth"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; allowed: external_auth")
    items = doc.get("external_auth")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError(f"{path}: 'external_auth' must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: external_auth[{i}] must be a mapping")
        out.append((f"{path}: external_auth[{i}]", item))
    return out


def load_providers(
    config_path: Path | None, env: Mapping[str, str]
) -> tuple[ProviderConfig, ...]:
    """All providers from the file (if any) then the environment, checked together."""
    raw: list[tuple[str, dict[str, Any], bool]] = []
    if config_path is not None:
        raw += [(where, item, False) for where, item in providers_from_file(config_path)]
    raw += [(where, item, True) for where, item in providers_from_env(env)]
    providers: list[ProviderConfig] = []
    seen: dict[str, str] = {}
    for where, item, from_env in raw:
        p = build_provider(item, where, from_env)
        if p.id in seen:
            raise ConfigError(
                f"{where}: multiple external auth providers exist with the id {p.id!r} "
                f"(also {seen[p.id]}); give each a unique 'id'"
            )
        seen[p.id] = where
        providers.append(p)
    return tuple(providers)


def split_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6 address]:port`` for IPv6) as a pair; ConfigError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"metrics address {text!r} is not HOST:PORT "
                          "(for example 127.0.0.1:2112 or [::1]:2112)")
    return host, int(port)


def _env_number(env: Mapping[str, str], name: str, kind: type, default: Any, *,
                at_least: float | None = None, more_than: float | None = None) -> Any:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(
            f"{name} has value {value!r}. Not a valid {kind.__name__}"
        ) from None
    if at_least is not None and not number >= at_least:
        raise ConfigError(f"{name} has value {value!r}. It must be {at_least:g} or more")
    if more_than is not None and not number > more_than:
        raise ConfigError(f"{name} has value {value!r}. It must be more than {more_than:g}")
    return number


def load_settings(
    env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings from the environment, with explicit overrides (CLI options) winning.

    ``config`` may be given as an override; otherwise ``EXTAUTH_CONFIG``, then
    ``./extauth.yaml`` when it exists.
    """
    env = os.environ if env is None else env
    over = {k: v for k, v in overrides.items() if v is not None}
    config = over.pop("config", None) or env.get("EXTAUTH_CONFIG")
    if config is None and Path("extauth.yaml").exists():
        config = "extauth.yaml"
    base = Settings(
        database=env.get("EXTAUTH_DB") or "extauth.db",
        db_pool_size=_env_number(env, "EXTAUTH_DB_POOL_SIZE", int, 10, at_least=1),
        db_timeout=_env_number(env, "EXTAUTH_DB_TIMEOUT", float, 5.0, more_than=0),
        host=env.get("EXTAUTH_HOST") or "127.0.0.1",
        port=_env_number(env, "EXTAUTH_PORT", int, 8080),
        access_url=env.get("EXTAUTH_ACCESS_URL", ""),
        provider_timeout=_env_number(env, "EXTAUTH_PROVIDER_TIMEOUT", float, 5.0,
                                      more_than=0),
        validate_responses=parse_bool("EXTAUTH_VALIDATE_RESPONSES",
                                      env.get("EXTAUTH_VALIDATE_RESPONSES") or "false"),
        max_body_bytes=_env_number(env, "EXTAUTH_MAX_BODY_BYTES", int, 64 * 1024),
        refresh_retry_seconds=_env_number(env, "EXTAUTH_REFRESH_RETRY_SECONDS", float, 10.0),
        audit_retention_days=_env_number(env, "EXTAUTH_AUDIT_RETENTION_DAYS", int, 90),
        validate_cache_seconds=_env_number(env, "EXTAUTH_VALIDATE_CACHE_SECONDS", float, 5.0),
        revoke_retry_seconds=_env_number(env, "EXTAUTH_REVOKE_RETRY_SECONDS", float, 30.0),
        stock_connexion=parse_bool("EXTAUTH_STOCK_CONNEXION",
                                   env.get("EXTAUTH_STOCK_CONNEXION") or "false"),
        metrics_address=env.get("EXTAUTH_METRICS_ADDRESS", ""),
        log_format=env.get("EXTAUTH_LOG_FORMAT") or "text",
        access_log=parse_bool("EXTAUTH_ACCESS_LOG", env.get("EXTAUTH_ACCESS_LOG") or "true"),
        shutdown_seconds=_env_number(env, "EXTAUTH_SHUTDOWN_SECONDS", float, 10.0),
        listen_seconds=_env_number(env, "EXTAUTH_LISTEN_SECONDS", float, 55.0),
    )
    try:
        base = replace(base, encryption_keys=keys_from_env(env))
    except KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    if "database" in over:
        over["database"] = str(over["database"])
    settings = replace(base, **over)
    if settings.listen_seconds <= 0:
        raise ConfigError(f"EXTAUTH_LISTEN_SECONDS has value {settings.listen_seconds:g}. "
                          "It must be more than 0")
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"EXTAUTH_LOG_FORMAT has value {settings.log_format!r}. "
                          f"Use one of {', '.join(LOG_FORMATS)}")
    if settings.access_url and not _valid_url(settings.access_url):
        raise ConfigError(f"access URL {settings.access_url!r} is not an http(s) URL")
    if settings.metrics_address:
        _, metrics_port = split_address(settings.metrics_address)
        if metrics_port == settings.port:
            raise ConfigError(f"metrics address {settings.metrics_address!r}: the metrics "
                              f"listener needs a port of its own, not the API's ({settings.port})")
    if settings.shutdown_seconds < 0:
        raise ConfigError(f"EXTAUTH_SHUTDOWN_SECONDS has value {settings.shutdown_seconds!r}. "
                          "Not a number of seconds (0 or more)")
    if "providers" not in over:
        providers = load_providers(Path(config) if config else None, env)
        settings = replace(settings, providers=providers)
    return settings
