"""``extauth ...``: serve the API, and the commands that manage it.

``_base`` holds the command group; each module adds its commands to it:
``serve`` (the server), ``admin`` (users, tokens, agents, providers, keys,
audit, config, docs), ``db`` (copying a deployment), ``clients``
(access-token, git-credential, setup-git: they talk HTTP to a running
server).
"""

from __future__ import annotations

from extauth.cli import admin, clients, db, serve
from extauth.cli._base import main
from extauth.cli.serve import RedactFilter

__all__ = ["RedactFilter", "admin", "clients", "db", "main", "serve"]
