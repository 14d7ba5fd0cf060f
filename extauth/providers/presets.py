"""Defaults that a provider's ``type`` fills in; explicit keys always win.

Any type without a preset is a generic OAuth 2.0 server: every URL must be
configured, and PKCE S256 is used unless ``pkce_methods`` says otherwise.
"""

from __future__ import annotations

from typing import Any

# Legacy type names and what they mean today.
ALIASES = {"bitbucket": "bitbucket-cloud"}

# type -> defaults. Filled per provider type; a type absent here is generic.
PRESETS: dict[str, dict[str, Any]] = {}

GENERIC_DEFAULTS: dict[str, Any] = {"pkce_methods": ("S256",)}


def apply_preset(values: dict[str, Any]) -> dict[str, Any]:
    """Return ``values`` with the defaults of its type filled in where unset."""
    out = dict(values)
    ptype = ALIASES.get(out["type"], out["type"])
    if ptype != out["type"]:
        out.setdefault("id", out["type"])
        out["type"] = ptype
    for key, value in PRESETS.get(ptype, GENERIC_DEFAULTS).items():
        if not out.get(key):
            out[key] = value
    return out
