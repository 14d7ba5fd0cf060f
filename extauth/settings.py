"""Server settings and provider configs, loaded once at start and frozen.

Precedence: CLI option > environment > config file > default. Providers come
from the config file's ``external_auth:`` list and from Coder's
``CODER_EXTERNAL_AUTH_<n>_<KEY>`` variables (indexes contiguous from 0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from extauth.crypto import KeyConfigError, keys_from_env
from extauth.providers.presets import apply_preset

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
    client_secret: str = ""
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
_QUIRKS = {"token_auth", "device_auth", "exchange", "revoke_style", "auth_params", "notes"}
_KEYS = {f.name for f in fields(ProviderConfig)} - _QUIRKS


@dataclass(frozen=True)
class Settings:
    """Everything the server needs, explicit; never read from the environment later."""

    db_path: Path = Path("extauth.db")
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
    # Seconds a `listen` request to the token hand-off waits for a link.
    listen_seconds: float = 55.0
    # AES-256-GCM keys for tokens at rest; the first encrypts. Never printed.
    encryption_keys: tuple[bytes, ...] = field(default=(), repr=False)

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


def _as_list(where: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise ConfigError(f"{where}: {key!r} must be a list of strings or a space-separated string")


def _as_bool(where: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: {key!r} has value {value!r}. Not a valid boolean (true or false)")


def _valid_url(value: str) -> bool:
    return bool(re.match(r"^https?://[^/\s]+", value))


def build_provider(raw: Mapping[str, Any], where: str) -> ProviderConfig:
    """Turn one raw provider mapping (YAML or env) into a checked ProviderConfig."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        allowed = ", ".join(sorted(_KEYS))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {allowed}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in _LIST_KEYS:
            values[key] = _as_list(where, key, value)
        elif key in _BOOL_KEYS:
            values[key] = _as_bool(where, key, value)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            values[key] = str(value).strip()
        else:
            raise ConfigError(f"{where}: {key!r} must be a string")
    ptype = values.get("type", "").lower()
    if not ptype:
        raise ConfigError(f"{where}: 'type' must be provided (github, gitlab, ... or any name)")
    values["type"] = ptype
    values = apply_preset(values)
    pid = values.get("id") or values["type"]
    values["id"] = pid
    where = f"{where} (id {pid!r})"
    if not _ID_RE.match(pid) or len(pid) > _ID_MAX:
        raise ConfigError(
            f"{where}: 'id' {pid!r} is not a valid id: use letters, digits and single hyphens, "
            f"at most {_ID_MAX} characters"
        )
    if not values.get("client_id"):
        raise ConfigError(f"{where}: 'client_id' must be provided")
    for key in _URL_KEYS:
        if values.get(key) and not _valid_url(values[key]):
            raise ConfigError(f"{where}: {key!r} has value {values[key]!r}. Not an http(s) URL")
    if values.get("regex"):
        try:
            re.compile(values["regex"])
        except re.error as exc:
            raise ConfigError(f"{where}: 'regex' does not compile: {exc}") from None
    if values.get("device_flow") and not values.get("device_code_url"):
        raise ConfigError(f"{where}: 'device_flow' is true but 'device_code_url' is not set")
    if not values.get("token_url"):
        raise ConfigError(f"{where}: 'token_url' must be provided for type {ptype!r}")
    methods = values.get("pkce_methods", ())
    bad = [m for m in methods if m not in ("S256", "plain", "none")]
    if bad:
        raise ConfigError(f"{where}: 'pkce_methods' has {bad[0]!r}; allowed are S256, plain, none")
    values.setdefault("display_name", ptype)
    values.setdefault("display_icon", DEFAULT_ICON)
    return ProviderConfig(**values)


def providers_from_env(env: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Raw provider mappings from ``CODER_EXTERNAL_AUTH_<n>_<KEY>`` variables."""
    found: list[tuple[str, dict[str, Any]]] = []
    for prefix in _ENV_PREFIXES:
        by_index: dict[int, dict[str, Any]] = {}
        for name, value in env.items():
            m = re.match(rf"^{prefix}(\d+)_([A-Z0-9_]+)$", name)
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
    raw: list[tuple[str, dict[str, Any]]] = []
    if config_path is not None:
        raw += providers_from_file(config_path)
    raw += providers_from_env(env)
    providers: list[ProviderConfig] = []
    seen: dict[str, str] = {}
    for where, item in raw:
        p = build_provider(item, where)
        if p.id in seen:
            raise ConfigError(
                f"{where}: multiple external auth providers exist with the id {p.id!r} "
                f"(also {seen[p.id]}); give each a unique 'id'"
            )
        seen[p.id] = where
        providers.append(p)
    return tuple(providers)


def _env_number(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(
            f"{name} has value {value!r}. Not a valid {kind.__name__}"
        ) from None


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
        db_path=Path(env.get("EXTAUTH_DB") or "extauth.db"),
        host=env.get("EXTAUTH_HOST") or "127.0.0.1",
        port=_env_number(env, "EXTAUTH_PORT", int, 8080),
        access_url=env.get("EXTAUTH_ACCESS_URL", ""),
        provider_timeout=_env_number(env, "EXTAUTH_PROVIDER_TIMEOUT", float, 5.0),
        validate_responses=_as_bool("env", "EXTAUTH_VALIDATE_RESPONSES",
                                    env.get("EXTAUTH_VALIDATE_RESPONSES", "false")),
        max_body_bytes=_env_number(env, "EXTAUTH_MAX_BODY_BYTES", int, 64 * 1024),
        refresh_retry_seconds=_env_number(env, "EXTAUTH_REFRESH_RETRY_SECONDS", float, 10.0),
        audit_retention_days=_env_number(env, "EXTAUTH_AUDIT_RETENTION_DAYS", int, 90),
        validate_cache_seconds=_env_number(env, "EXTAUTH_VALIDATE_CACHE_SECONDS", float, 5.0),
        listen_seconds=_env_number(env, "EXTAUTH_LISTEN_SECONDS", float, 55.0),
    )
    try:
        base = replace(base, encryption_keys=keys_from_env(env))
    except KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    if "db_path" in over:
        over["db_path"] = Path(over["db_path"])
    settings = replace(base, **over)
    if settings.listen_seconds <= 0:
        raise ConfigError(f"EXTAUTH_LISTEN_SECONDS has value {settings.listen_seconds:g}. "
                          "It must be more than 0")
    if settings.access_url and not _valid_url(settings.access_url):
        raise ConfigError(f"access URL {settings.access_url!r} is not an http(s) URL")
    if "providers" not in over:
        providers = load_providers(Path(config) if config else None, env)
        settings = replace(settings, providers=providers)
    return settings
