"""``pip install .`` outside the checkout works: the wheel carries the spec."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_spec_and_the_handlers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("extauth-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "extauth/openapi.yaml" in names
    assert {"handlers/external_auth.py", "handlers/security.py", "extauth/app.py"} <= names
    # The pages render from files, not modules: templates, stylesheet, script.
    pages = ROOT / "extauth" / "pages"
    shipped = {p.relative_to(ROOT).as_posix()
               for p in [*pages.glob("templates/*"), *pages.glob("static/*")]}
    assert {"extauth/pages/templates/base.html", "extauth/pages/static/pages.js"} <= shipped
    assert shipped <= names, shipped - names
    packaged = zipfile.ZipFile(wheel).read("extauth/openapi.yaml")
    assert packaged == (ROOT / "openapi.yaml").read_bytes()
