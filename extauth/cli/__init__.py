"""``extauth ...``: serve the API, and the commands that manage it.

``_base`` holds the command group; each module adds its commands to it:
``serve`` (the server), ``admin`` (users, tokens, providers, keys, audit,
config, docs).
"""

from __future__ import annotations

from extauth.cli import admin, serve
from extauth.cli._base import main
from extauth.cli.serve import RedactFilter

__all__ = ["RedactFilter", "admin", "main", "serve"]
