"""docs/api.md is generated from openapi.yaml (``extauth docs``) and kept in step."""

from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from extauth import apidocs
from extauth.app import load_spec
from extauth.cli import main

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "api.md"
SPEC = load_spec()
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in SPEC["paths"].items()
            for method, op in item.items() if method in METHODS]


def _section(text: str, anchor: str) -> str:
    """The text from ``anchor`` to the next anchor."""
    start = text.index(f'<a id="{anchor}"></a>')
    end = text.find('<a id="', start + 1)
    return text[start:end if end >= 0 else None]


@pytest.fixture(scope="module")
def reference() -> str:
    return apidocs.render()


def test_the_committed_reference_is_what_the_spec_generates(reference: str) -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    if committed != reference:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(keepends=True), reference.splitlines(keepends=True),
            "docs/api.md (committed)", "docs/api.md (from openapi.yaml)"))[:60])
        pytest.fail("docs/api.md is out of date with openapi.yaml: run `extauth docs` "
                    f"and commit the result.\n{diff}", pytrace=False)


def test_the_reference_is_deterministic(reference: str) -> None:
    assert apidocs.render(copy.deepcopy(SPEC)) == reference
    assert apidocs.render(SPEC) == reference
    assert reference.endswith("\n") and not reference.endswith("\n\n")


@pytest.mark.parametrize("path, method, op", _operations(),
                         ids=[f"{m.upper()} {p}" for p, m, _ in _operations()])
def test_every_operation_has_its_section(reference: str, path: str, method: str,
                                         op: dict[str, Any]) -> None:
    anchor = apidocs.operation_anchor(method, path)
    assert f"(#{anchor})" in reference, "not in the index of operations"
    section = _section(reference, anchor)
    assert f"### {op['summary']}" in section
    assert f"`{method.upper()} {path}`" in section
    assert op["operationId"] in section
    for paragraph in op.get("description", "").strip().split("\n\n"):
        assert paragraph.strip() in section
    curl = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert curl, "no curl example"
    command = curl.group(1)
    assert command.startswith("curl ")
    if op.get("security") == []:
        assert "Coder-Session-Token" not in command
    else:
        assert '-H "Coder-Session-Token: $TOKEN"' in command
    if method != "get":
        assert f"-X {method.upper()}" in command
    for code, response in op["responses"].items():
        row = re.search(rf"^\| {code} \| (.*)$", section, re.M)
        assert row, f"no row for {code}"
        resolved = response
        if "$ref" in response:
            resolved = SPEC["components"]["responses"][response["$ref"].split("/")[-1]]
        assert apidocs.cell(resolved["description"]) in row.group(1)
        schema = resolved.get("content", {}).get("application/json", {}).get("schema", {})
        if "$ref" in schema:
            name = schema["$ref"].split("/")[-1]
            assert f"[{name}](#{apidocs.schema_anchor(name)})" in row.group(1)
    for param in op.get("parameters", []):
        assert f"| `{param['name']}` | {param['in']} |" in section


def test_every_example_of_the_spec_is_shown_as_json(reference: str) -> None:
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", reference, re.S)]

    def examples(node: Any) -> list[Any]:
        found = []
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "example" and isinstance(value, (dict, list)):
                    found.append(value)
                elif key == "examples" and isinstance(value, dict):
                    found += [v["value"] for v in value.values() if "value" in v]
                else:
                    found += examples(value)
        elif isinstance(node, list):
            for value in node:
                found += examples(value)
        return found

    for example in examples(SPEC["paths"]) + examples(SPEC["components"]["responses"]):
        assert example in shown, f"example not shown: {example}"


def test_the_post_example_sends_the_specs_body(reference: str) -> None:
    section = _section(reference, apidocs.operation_anchor(
        "post", "/api/v2/external-auth/{externalauth}/device"))
    body = SPEC["paths"]["/api/v2/external-auth/{externalauth}/device"]["post"][
        "requestBody"]["content"]["application/json"]["example"]
    assert f"-d '{json.dumps(body)}'" in section
    assert "-H 'Content-Type: application/json'" in section


@pytest.mark.parametrize("name", list(SPEC["components"]["schemas"]))
def test_every_schema_has_its_section(reference: str, name: str) -> None:
    schema = SPEC["components"]["schemas"][name]
    section = _section(reference, apidocs.schema_anchor(name))
    assert f"### {name}" in section
    required = set(schema.get("required", []))
    for prop, spec in schema.get("properties", {}).items():
        row = re.search(rf"^\| `{re.escape(prop)}` \| (.*) \| (yes|no) \| (.*) \|$", section, re.M)
        assert row, f"no row for {name}.{prop}"
        assert row.group(2) == ("yes" if prop in required else "no")
        assert row.group(3) == apidocs.cell(spec.get("description", ""))
        if "type" in spec:
            assert row.group(1).startswith(spec["type"]), row.group(1)


@pytest.mark.parametrize("name", list(SPEC["components"]["responses"]))
def test_every_shared_response_has_its_section(reference: str, name: str) -> None:
    section = _section(reference, apidocs.response_anchor(name))
    assert f"### {name}" in section
    assert SPEC["components"]["responses"][name]["description"].strip() in section


def test_every_link_points_at_an_anchor(reference: str) -> None:
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', reference))
    links = set(re.findall(r"\]\(#([^)]+)\)", reference))
    assert links <= anchors, links - anchors


# -- the command -------------------------------------------------------------------------------


def test_extauth_docs_writes_the_reference(tmp_path: Path, reference: str) -> None:
    out = tmp_path / "sub" / "api.md"
    result = CliRunner().invoke(main, ["docs", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == reference
    again = CliRunner().invoke(main, ["docs", "-o", str(out)])
    assert again.exit_code == 0 and "unchanged" in again.output


def test_extauth_docs_check(tmp_path: Path, reference: str) -> None:
    out = tmp_path / "api.md"
    missing = CliRunner().invoke(main, ["docs", "--check", "--output", str(out)])
    assert missing.exit_code == 1
    assert "run 'extauth docs'" in missing.output
    assert not out.exists()
    out.write_text(reference, encoding="utf-8")
    assert CliRunner().invoke(main, ["docs", "--check", "--output", str(out)]).exit_code == 0
    out.write_text(reference.replace("Health check", "Health check!"), encoding="utf-8")
    stale = CliRunner().invoke(main, ["docs", "--check", "--output", str(out)])
    assert stale.exit_code == 1, stale.output
    assert out.read_text(encoding="utf-8") != reference  # --check writes nothing


def test_extauth_docs_check_on_the_committed_file() -> None:
    result = CliRunner().invoke(main, ["docs", "--check", "--output", str(COMMITTED)])
    assert result.exit_code == 0, result.output


def test_extauth_docs_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(main, ["docs", "--nope"])
    assert result.exit_code == 2
    assert "docs" in CliRunner().invoke(main, ["--help"]).output


# -- the README's compatibility tables ------------------------------------------------------


def _readme_section(heading: str) -> str:
    text = (COMMITTED.parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:end if end >= 0 else None]


@pytest.mark.parametrize("path, method, op", _operations(),
                         ids=[f"{m.upper()} {p}" for p, m, _ in _operations()])
def test_the_compatibility_table_has_every_operation(path: str, method: str,
                                                     op: dict[str, Any]) -> None:
    table = _readme_section("### Operations")
    assert f"| `{method.upper()} {path.replace('{externalauth}', '{id}')}`" in table


def test_the_compatibility_table_has_every_provider_key() -> None:
    from extauth.settings import _CODER_ONLY, _KEYS

    table = _readme_section("### Variables")
    missing = [key.upper() for key in sorted(_KEYS | _CODER_ONLY)
               if f"`{key.upper()}`" not in table]
    assert not missing, f"README's Variables table does not say: {missing}"
