"""``pip install .`` outside the checkout works: the wheel carries the spec."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
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


# Modules that only an optional extra's users import, and that extra.
EXTRAS = {"extauth/store/postgres.py": "postgres"}


def _declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"].get(extra, [])
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0)  # type: ignore[union-attr]
             for d in wanted}
    return {_normal(n) for n in names}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_the_code_imports_is_a_declared_dependency() -> None:
    """A package used only because another one depends on it today may be gone
    tomorrow: what extauth imports, it declares."""
    imported: dict[str, str] = {}
    for path in [*ROOT.glob("extauth/**/*.py"), *ROOT.glob("handlers/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                imported.setdefault(module.split(".")[0], str(path.relative_to(ROOT)))
    third_party = {m: where for m, where in imported.items()
                   if m not in sys.stdlib_module_names and m not in ("extauth", "handlers")}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in sorted(third_party.items()):
        dists = {_normal(d) for d in distributions.get(module, [module])}
        if not dists & _declared(EXTRAS.get(where)):
            missing[module] = (sorted(dists), where)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert {"starlette", "jsonschema"} <= _declared()
