"""The Markdown API reference, generated from openapi.yaml (``extauth docs``).

One section per operation (summary, method and path, description, a curl
example, parameters, request body, example responses, a table of responses),
then the shared responses and the schemas. The output depends on nothing but
the spec, so it can be committed and checked (``extauth docs --check``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from extauth.app import spec_path

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
BASE = "http://127.0.0.1:8080"
SESSION_HEADER = "Coder-Session-Token"
FORM = "application/x-www-form-urlencoded"
GENERATED_NOTE = ("<!-- Generated from openapi.yaml by `extauth docs`. Do not edit: change the "
                  "spec and run `extauth docs`. -->")


def load() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(spec_path().read_text(encoding="utf-8"))
    return spec


def render(spec: dict[str, Any] | None = None) -> str:
    """The reference for ``spec`` (openapi.yaml when None), as Markdown."""
    return _Renderer(spec if spec is not None else load()).render()


def check(path: Path, spec: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` holds exactly what ``render`` produces."""
    try:
        return path.read_text(encoding="utf-8") == render(spec)
    except FileNotFoundError:
        return False


def write(path: Path, spec: dict[str, Any] | None = None) -> bool:
    """Write the reference to ``path``; return whether its content changed."""
    text = render(spec)
    if check(path, spec):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


# -- helpers --------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def operation_anchor(method: str, path: str) -> str:
    return f"op-{method}-{slug(path) or 'root'}"


def schema_anchor(name: str) -> str:
    return f"schema-{slug(name)}"


def response_anchor(name: str) -> str:
    return f"response-{slug(name)}"


def cell(text: Any) -> str:
    """Text fit for one table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def paragraph(text: str | None) -> str:
    return (text or "").strip()


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


class _Renderer:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.components = spec.get("components", {})
        self.schemas: dict[str, Any] = self.components.get("schemas", {})
        self.responses: dict[str, Any] = self.components.get("responses", {})
        self.parameters: dict[str, Any] = self.components.get("parameters", {})
        self.out: list[str] = []

    # -- references ------------------------------------------------------------------

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow a local ``$ref`` (one level at a time, as deep as needed)."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 20:
            parts = node["$ref"].lstrip("#/").split("/")
            target: Any = self.spec
            for part in parts:
                target = target[part]
            node = target
            seen += 1
        return node

    def schema_link(self, name: str) -> str:
        return f"[{name}](#{schema_anchor(name)})"

    def same_as(self, schema: dict[str, Any]) -> str | None:
        """The component schema whose properties an inline object repeats."""
        props = schema.get("properties")
        for name, candidate in self.schemas.items():
            if candidate is not schema and props and candidate.get("properties") == props:
                return name
        return None

    def type_of(self, schema: dict[str, Any] | None) -> str:
        """A schema as a short phrase: ``string (date-time)``, ``array of [X](#x)``."""
        if not schema:
            return "any"
        if "$ref" in schema:
            return self.schema_link(ref_name(schema["$ref"]))
        kind = schema.get("type", "object" if "properties" in schema else "any")
        details = []
        if kind == "array":
            text = f"array of {self.type_of(schema.get('items'))}"
        elif kind == "object" and "properties" in schema:
            twin = self.same_as(schema)
            if twin:
                text = "object"
                details.append(f"the properties of {self.schema_link(twin)}")
            else:
                inner = "; ".join(
                    f"`{name}`"
                    + (" (required)" if name in schema.get("required", []) else "")
                    + f": {self.type_of(prop)}"
                    for name, prop in schema["properties"].items())
                text = f"object {{{inner}}}"
        else:
            text = str(kind)
        if "format" in schema:
            details.append(str(schema["format"]))
        if "enum" in schema:
            details.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
        if "pattern" in schema:
            details.append(f"matching `{schema['pattern']}`")
        if "minLength" in schema:
            details.append(f"at least {schema['minLength']} character(s)")
        if schema.get("nullable"):
            details.append("or null")
        return f"{text} ({', '.join(details)})" if details else text

    def schema_name(self, content: dict[str, Any] | None) -> str:
        if not content:
            return "(no body)"
        kinds = []
        if "application/json" in content:
            kinds.append(self.type_of(content["application/json"].get("schema")))
        if "text/html" in content:
            kinds.append("HTML page")
        if not kinds:
            kinds = [self.type_of(media.get("schema")) for media in content.values()]
        return " or ".join(dict.fromkeys(kinds))

    # -- output -------------------------------------------------------------------------

    def line(self, text: str = "") -> None:
        self.out.append(text)

    def render(self) -> str:
        info = self.spec.get("info", {})
        self.line(f"# {info.get('title', 'API')} API reference")
        self.line()
        self.line(GENERATED_NOTE)
        self.line()
        self.line(f"Version {info.get('version', '')}, OpenAPI {self.spec.get('openapi', '')}.")
        self.line()
        self.line(paragraph(info.get("description")))
        self.line()
        self.render_conventions()
        self.render_index()
        for path, item in self.spec.get("paths", {}).items():
            for method in METHODS:
                if method in item:
                    self.render_operation(path, method, item, item[method])
        self.render_shared_responses()
        self.render_schemas()
        text = "\n".join(self.out)
        text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
        return text

    def render_conventions(self) -> None:
        self.line("## Conventions")
        self.line()
        self.line(f"The examples use `BASE={BASE}` (the server's address) and a session token "
                  "in `TOKEN` (`extauth users create NAME` prints one).")
        self.line()
        schemes = self.components.get("securitySchemes", {})
        if schemes:
            self.line("Authentication: any one of an operation's security schemes, each "
                      "carrying the same session token (the `Agent` schemes: an agent token "
                      "or a session token).")
            self.line()
            self.line("| scheme | how | description |")
            self.line("|---|---|---|")
            for name, scheme in schemes.items():
                if scheme.get("type") == "apiKey":
                    how = f"{scheme['in']} `{scheme['name']}`"
                else:
                    how = f"`Authorization: {str(scheme.get('scheme', '')).title()} <token>`"
                self.line(f"| {name} | {how} | {cell(scheme.get('description', ''))} |")
            self.line()

    def render_index(self) -> None:
        self.line("## Operations")
        self.line()
        self.line("| method | path | summary |")
        self.line("|---|---|---|")
        for path, item in self.spec.get("paths", {}).items():
            for method in METHODS:
                if method in item:
                    op = item[method]
                    anchor = operation_anchor(method, path)
                    self.line(f"| {method.upper()} | [`{path}`](#{anchor}) | "
                              f"{cell(op.get('summary', ''))} |")
        self.line()

    def operation_parameters(self, item: dict[str, Any],
                             op: dict[str, Any]) -> list[dict[str, Any]]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
            param = self.resolve(raw)
            merged[(param["name"], param["in"])] = param
        return list(merged.values())

    def is_public(self, op: dict[str, Any]) -> bool:
        security = op.get("security", self.spec.get("security", []))
        return security == [] or {} in security

    def example_value(self, param: dict[str, Any]) -> Any:
        if "example" in param:
            return param["example"]
        schema = param.get("schema", {})
        return schema.get("example")

    def curl(self, path: str, method: str, op: dict[str, Any],
             params: list[dict[str, Any]]) -> str:
        url = path
        query = []
        for param in params:
            value = self.example_value(param)
            if param["in"] == "path":
                url = url.replace("{" + param["name"] + "}", str(value or param["name"]))
            elif param["in"] == "query" and value is not None:
                query.append(f"{param['name']}={value}")
        if query:
            url += "?" + "&".join(query)
        parts = ["curl -s"]
        responses = op.get("responses", {})
        if any(str(code).startswith("3") for code in responses):
            parts[0] = "curl -s -i"
        if method != "get":
            parts.append(f"-X {method.upper()}")
        if not self.is_public(op):
            parts.append(f'-H "{SESSION_HEADER}: $TOKEN"')
        body = op.get("requestBody")
        if body:
            content = body.get("content", {})
            media, spec = next(iter(content.items()))
            example = self.body_example(spec)
            if media == FORM and isinstance(example, dict):
                # curl sends --data-urlencode as a form, Content-Type included.
                parts += [f"--data-urlencode {shell_quote(f'{k}={v}')}"
                          for k, v in example.items()]
            else:
                parts.append(f"-H 'Content-Type: {media}'")
                if example is not None:
                    parts.append(f"-d {shell_quote(json.dumps(example, ensure_ascii=False))}")
        parts.append(f'"$BASE{url}"')
        lines = [parts[0]]
        for part in parts[1:]:
            if len(lines[-1]) + 1 + len(part) <= 88:
                lines[-1] += " " + part
            else:
                lines.append("     " + part)
        return " \\\n".join(lines)

    def body_example(self, media: dict[str, Any]) -> Any:
        if "example" in media:
            return media["example"]
        for example in media.get("examples", {}).values():
            return self.resolve(example).get("value")
        return self.resolve(media.get("schema", {})).get("example")

    def who(self, op: dict[str, Any]) -> str:
        """Which credential an operation takes, from its security schemes."""
        security = op.get("security", self.spec.get("security", []))
        names = [name for requirement in security for name in requirement]
        if names and all(name.startswith("Agent") for name in names):
            return "agent token or session token required"
        return "session token required"

    def render_operation(self, path: str, method: str, item: dict[str, Any],
                         op: dict[str, Any]) -> None:
        anchor = operation_anchor(method, path)
        self.line(f'<a id="{anchor}"></a>')
        self.line()
        self.line(f"### {op.get('summary') or method.upper() + ' ' + path}")
        self.line()
        self.line(f"`{method.upper()} {path}`")
        self.line()
        facts = [f"operationId `{op['operationId']}`"] if "operationId" in op else []
        if op.get("tags"):
            facts.append("tag " + ", ".join(op["tags"]))
        facts.append("no authentication" if self.is_public(op) else self.who(op))
        self.line("; ".join(facts) + ".")
        self.line()
        if op.get("description"):
            self.line(paragraph(op["description"]))
            self.line()
        params = self.operation_parameters(item, op)
        self.line("Example:")
        self.line()
        self.line("```sh")
        self.line(self.curl(path, method, op, params))
        self.line("```")
        self.line()
        if params:
            self.line("Parameters:")
            self.line()
            self.line("| name | in | type | required | description |")
            self.line("|---|---|---|---|---|")
            for param in params:
                example = self.example_value(param)
                description = param.get("description", "")
                if example is not None:
                    description = f"{description} Example: `{example}`.".strip()
                self.line(f"| `{param['name']}` | {param['in']} | "
                          f"{self.type_of(param.get('schema'))} | "
                          f"{'yes' if param.get('required') else 'no'} | {cell(description)} |")
            self.line()
        body = op.get("requestBody")
        if body:
            body = self.resolve(body)
            for media, spec in body.get("content", {}).items():
                required = "required" if body.get("required") else "optional"
                self.line(f"Request body ({required}), `{media}`: "
                          f"{self.type_of(spec.get('schema'))}.")
                self.line()
                example = self.body_example(spec)
                if example is not None:
                    self.line("```json")
                    self.line(as_json(example))
                    self.line("```")
                    self.line()
        self.render_responses(op.get("responses", {}))

    def render_responses(self, responses: dict[str, Any]) -> None:
        self.line("Responses:")
        self.line()
        self.line("| status | meaning | schema | headers |")
        self.line("|---|---|---|---|")
        for code, raw in responses.items():
            response = self.resolve(raw)
            meaning = cell(response.get("description", ""))
            if "$ref" in raw:
                name = ref_name(raw["$ref"])
                meaning = f"{meaning} ([{name}](#{response_anchor(name)}))"
            headers = ", ".join(f"`{h}`" for h in response.get("headers", {}))
            self.line(f"| {code} | {meaning} | {self.schema_name(response.get('content'))} | "
                      f"{headers} |")
        self.line()
        for code, raw in responses.items():
            if "$ref" in raw:
                continue  # its example is under "Shared responses"
            for label, example in self.response_examples(raw):
                title = f"Example {code} response" + (f" ({label})" if label else "") + ":"
                self.line(title)
                self.line()
                self.line("```json")
                self.line(as_json(example))
                self.line("```")
                self.line()

    def response_examples(self, response: dict[str, Any]) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for media in response.get("content", {}).values():
            if "example" in media:
                found.append(("", media["example"]))
            for name, example in media.get("examples", {}).items():
                found.append((name, self.resolve(example).get("value")))
        return found

    def render_shared_responses(self) -> None:
        if not self.responses:
            return
        self.line("## Shared responses")
        self.line()
        self.line("Answers several operations give, referred to from their tables.")
        self.line()
        for name, response in self.responses.items():
            self.line(f'<a id="{response_anchor(name)}"></a>')
            self.line()
            self.line(f"### {name}")
            self.line()
            self.line(paragraph(response.get("description")))
            self.line()
            if response.get("content"):
                self.line(f"Body: {self.schema_name(response['content'])}.")
                self.line()
            for header, spec in response.get("headers", {}).items():
                required = ", always sent" if spec.get("required") else ""
                self.line(f"Header `{header}` ({self.type_of(spec.get('schema'))}{required}): "
                          f"{cell(spec.get('description', ''))}")
                self.line()
            for label, example in self.response_examples(response):
                self.line("Example" + (f" ({label})" if label else "") + ":")
                self.line()
                self.line("```json")
                self.line(as_json(example))
                self.line("```")
                self.line()

    def render_schemas(self) -> None:
        if not self.schemas:
            return
        self.line("## Schemas")
        self.line()
        for name, schema in self.schemas.items():
            self.line(f'<a id="{schema_anchor(name)}"></a>')
            self.line()
            self.line(f"### {name}")
            self.line()
            if schema.get("description"):
                self.line(paragraph(schema["description"]))
                self.line()
            properties = schema.get("properties", {})
            if properties:
                self.line("| property | type | required | description |")
                self.line("|---|---|---|---|")
                required = set(schema.get("required", []))
                for prop, spec in properties.items():
                    self.line(f"| `{prop}` | {self.type_of(spec)} | "
                              f"{'yes' if prop in required else 'no'} | "
                              f"{cell(spec.get('description', ''))} |")
                self.line()
                if schema.get("additionalProperties") is False:
                    self.line("No other properties.")
                else:
                    self.line("Other properties are allowed.")
                self.line()
            else:
                self.line(f"Type: {self.type_of(schema)}.")
                self.line()
