"""Commands that walk every row show progress (plain lines when not on a
terminal, a bar on one) and the counts at the end."""

from __future__ import annotations

import base64
import os
import pty
import subprocess
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from extauth.cli import main
from extauth.crypto import Cipher, key_id
from extauth.store import AuditEvent, open_store, utcnow
from tests.live import EXTAUTH

K1, K2 = os.urandom(32), os.urandom(32)
B1, B2 = base64.b64encode(K1).decode(), base64.b64encode(K2).decode()


def _links(db: Path, n: int) -> None:
    store = open_store(db, Cipher((K1,)))
    store.migrate()
    for i in range(n):
        store.upsert_link(store.create_user(f"u{i}").id, "p", f"at-{i}", f"rt-{i}", None)


def test_rotate_says_how_far_it_got_in_plain_lines(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    _links(db, 25)
    r = CliRunner().invoke(main, ["keys", "rotate", "--db", str(db), "--batch", "10"],
                           env={"EXTAUTH_ENCRYPTION_KEYS": f"{B2},{B1}"})
    assert r.exit_code == 0, r.stderr
    assert r.stderr.splitlines() == [
        "re-encrypting links: 10 of 25",
        "re-encrypting links: 20 of 25",
        "re-encrypting links: 25 of 25",
        f"re-encrypted with key {key_id(K2)}: 25 link(s) and 0 pending revocation(s)",
    ]
    assert open_store(db).key_counts() == {key_id(K2): 25}


def test_plain_lines_are_at_most_one_per_tenth(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    _links(db, 40)
    r = CliRunner().invoke(main, ["keys", "decrypt", "--db", str(db), "--batch", "1"],
                           env={"EXTAUTH_ENCRYPTION_KEYS": B1})
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "decrypting links: 1 of 40"
    assert lines[-2:] == ["decrypting links: 40 of 40",
                          "decrypted 40 link(s) and 0 pending revocation(s)"]
    assert len(lines) == 12  # the first, one per tenth after it, the counts
    assert open_store(db).key_counts() == {"": 40}


def test_audit_prune_deletes_old_events_in_batches(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = open_store(db)
    store.migrate()
    for days in (400, 200, 100, 100, 10, 1):
        store.insert_audit(AuditEvent("link", at=utcnow() - timedelta(days=days)))
    r = CliRunner().invoke(main, ["audit", "prune", "--db", str(db), "--older-than", "30"])
    assert r.exit_code == 0, r.stderr
    assert r.stderr.splitlines() == ["deleting audit events: 4 of 4",
                                     "deleted 4 audit event(s) older than 30 day(s)"]
    assert len(store.audit_events()) == 2
    # the retention of the server by default
    r = CliRunner().invoke(main, ["audit", "prune", "--db", str(db)],
                           env={"EXTAUTH_AUDIT_RETENTION_DAYS": "5"})
    assert r.stderr.splitlines()[-1] == "deleted 1 audit event(s) older than 5 day(s)"
    # the group's --db names the database to prune too
    store.insert_audit(AuditEvent("link", at=utcnow() - timedelta(days=10)))
    r = CliRunner().invoke(main, ["audit", "--db", str(db), "prune", "--older-than", "5"])
    assert r.exit_code == 0 and r.stderr.splitlines()[-1].startswith("deleted 1 audit event")
    r = CliRunner().invoke(main, ["audit", "--user", "alice", "prune", "--db", str(db)])
    assert r.exit_code == 2 and "'audit prune' deletes by age only" in r.stderr
    # the trail is still shown by the group itself
    r = CliRunner().invoke(main, ["audit", "--db", str(db)])
    assert r.exit_code == 0 and r.stdout.count("\tlink\t") == 1


def test_purge_batches_are_small(tmp_path: Path) -> None:
    store = open_store(tmp_path / "a.db")
    store.migrate()
    for _ in range(5):
        store.insert_audit(AuditEvent("link", at=utcnow() - timedelta(days=100)))
    before = utcnow() - timedelta(days=90)
    assert store.audit_events_before(before) == 5
    assert store.purge_audit(before, batch=2) == 2
    assert store.audit_events_before(before) == 3


def test_on_a_terminal_rotate_draws_a_bar(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    _links(db, 30)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [*EXTAUTH, "keys", "rotate", "--db", str(db), "--batch", "10"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, timeout=60,
            env={**os.environ, "EXTAUTH_ENCRYPTION_KEYS": f"{B2},{B1}", "COLUMNS": "100"},
            cwd=Path(__file__).resolve().parents[1])
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all is read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    text = seen.decode()
    assert "re-encrypting links" in text and "30/30" in text and "100%" in text
    assert "#" in text  # the bar itself
    assert "re-encrypting links: 10 of 30" not in text  # no plain lines on a terminal
    assert f"re-encrypted with key {key_id(K2)}: 30 link(s)" in text
