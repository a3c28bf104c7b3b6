"""template.yaml as data: tables, routes and function environments for the local stack and tests.

The local stack and the tests build everything from here, so the template, the tables the
tests use and the routes the local gateway serves cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short tags (!Ref X -> {"Ref": "X"})."""


def _intrinsic(loader: yaml.Loader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@lru_cache(maxsize=4)
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Each resource of `kind` as deployed with the parameters' defaults (see `resolve_conditions`)."""
    return {
        name: resource.get("Properties", {})
        for name, resource in resolve_conditions(template)["Resources"].items()
        if resource["Type"] == kind
    }


def resolve_conditions(template: dict[str, Any], parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The template as CloudFormation deploys it with these parameters (the others at their
    defaults): resources whose Condition is false left out, each Fn::If replaced by its branch,
    AWS::NoValue removed. Every other intrinsic (!Ref, !GetAtt, !Sub) is kept as it is."""
    if "Conditions" not in template:
        return template
    given = parameters or {}

    def value(name: str) -> str:
        return str(given[name]) if name in given else _parameter_default(template, name)

    truth: dict[str, bool] = {}

    def condition(name: str) -> bool:
        if name not in truth:
            truth[name] = evaluate(template["Conditions"][name])
        return truth[name]

    def operand(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return value(node["Ref"])
        return node

    def evaluate(node: Any) -> bool:
        (function, arguments), = node.items()
        if function in ("Condition", "Fn::Condition"):  # !Condition X reads as Fn::Condition
            return condition(arguments)
        if function == "Fn::Equals":
            left, right = (operand(argument) for argument in arguments)
            return str(left) == str(right)
        if function == "Fn::And":
            return all(evaluate(argument) for argument in arguments)
        if function == "Fn::Or":
            return any(evaluate(argument) for argument in arguments)
        if function == "Fn::Not":
            return not evaluate(arguments[0])
        raise ValueError(f"template.yaml: a condition this reader cannot evaluate: {node}")

    def resolve(node: Any) -> Any:
        if node == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, when_true, when_false = node["Fn::If"]
                return resolve(when_true if condition(name) else when_false)
            resolved = {key: resolve(item) for key, item in node.items()}
            return {key: item for key, item in resolved.items() if item is not _NO_VALUE}
        if isinstance(node, list):
            return [item for item in (resolve(item) for item in node) if item is not _NO_VALUE]
        return node

    def kept(section: dict[str, Any]) -> dict[str, Any]:
        return {name: {key: item for key, item in entry.items() if key != "Condition"}
                for name, entry in section.items() if "Condition" not in entry or condition(entry["Condition"])}

    resolved = {key: item for key, item in template.items() if key != "Conditions"}
    for section in ("Resources", "Outputs"):
        if section in template:
            resolved[section] = resolve(kept(template[section]))
    return resolved


class _NoValue:
    """AWS::NoValue: the property (or list entry) it stands for is left out."""


_NO_VALUE = _NoValue()


def local_table_name(logical_id: str, prefix: str) -> str:
    return f"{prefix}-{logical_id}"


def table_definitions(template: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    """CreateTable arguments for every AWS::DynamoDB::Table, keyed by logical id."""
    tables = {}
    for logical_id, props in resources(template, "AWS::DynamoDB::Table").items():
        spec: dict[str, Any] = {
            "TableName": local_table_name(logical_id, prefix),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        for index_kind in ("LocalSecondaryIndexes", "GlobalSecondaryIndexes"):
            if props.get(index_kind):
                spec[index_kind] = props[index_kind]
        tables[logical_id] = spec
    return tables


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway form: /items/{item_id}
    function: str  # logical id
    code_dir: Path
    handler: str  # module.function, relative to code_dir
    pattern: re.Pattern[str]
    # How the APIs serving this route authenticate: "jwt" (customers), "iam" (the shop's systems),
    # "none" (a public API route without an authorizer: anyone, or a visitor token the function checks).
    authenticated_by: frozenset[str] = frozenset()

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


def _path_pattern(path: str) -> re.Pattern[str]:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$")


def api_authentication(template: dict[str, Any]) -> dict[str, str]:
    """Each HttpApi's logical id -> "jwt" or "iam", from its default authorizer."""
    kinds = {}
    for logical_id, props in resources(template, "AWS::Serverless::HttpApi").items():
        auth = props.get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        if default == "AWS_IAM":
            kinds[logical_id] = "iam"
        elif "JwtConfiguration" in auth.get("Authorizers", {}).get(default, {}):
            kinds[logical_id] = "jwt"
        else:
            raise ValueError(f"template.yaml: {logical_id} has no JWT or IAM default authorizer")
    return kinds


def http_routes(template: dict[str, Any], root: Path = PROJECT_ROOT) -> list[Route]:
    """One Route per method and path, however many APIs serve it (each with one function)."""
    kinds = api_authentication(template)
    routes: dict[str, Route] = {}
    for logical_id, props in resources(template, "AWS::Serverless::Function").items():
        for event in (props.get("Events") or {}).values():
            if event["Type"] != "HttpApi":
                continue
            path, method = event["Properties"]["Path"], event["Properties"]["Method"].upper()
            no_authorizer = (event["Properties"].get("Auth") or {}).get("Authorizer") == "NONE"
            kind = "none" if no_authorizer else kinds[event["Properties"]["ApiId"]["Ref"]]
            known = routes.get(f"{method} {path}")
            if known and known.function != logical_id:
                raise ValueError(f"template.yaml: {method} {path} goes to {known.function} and {logical_id}")
            routes[f"{method} {path}"] = Route(
                method, path, logical_id, root / props["CodeUri"], props["Handler"], _path_pattern(path),
                (known.authenticated_by if known else frozenset()) | {kind},
            )
    # Literal segments win over parameters, as in API Gateway: /models/train before /models/{v}.
    return sorted(routes.values(), key=lambda r: (r.path.count("{"), -len(r.path)))


def function_environment(
    template: dict[str, Any], logical_id: str, refs: dict[str, str], parameters: dict[str, str]
) -> dict[str, str]:
    """Globals plus the function's own variables, with !Ref resolved to local names."""
    global_vars = template.get("Globals", {}).get("Function", {}).get("Environment", {})
    own = resources(template, "AWS::Serverless::Function")[logical_id].get("Environment", {})
    merged = {**global_vars.get("Variables", {}), **own.get("Variables", {})}
    resolved = {}
    for name, value in merged.items():
        if isinstance(value, dict) and "Ref" in value:
            target = value["Ref"]
            if target in refs:
                value = refs[target]
            else:
                value = parameters.get(target) or _parameter_default(template, target)
        resolved[name] = str(value)
    return resolved


def _parameter_default(template: dict[str, Any], name: str) -> str:
    parameter = template.get("Parameters", {}).get(name)
    if parameter is None or "Default" not in parameter:
        raise KeyError(f"template.yaml: !Ref {name} resolves to nothing locally")
    return str(parameter["Default"])
