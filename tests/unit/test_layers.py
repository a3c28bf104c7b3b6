"""The layer rule of docs/architecture.md, read from the code's own imports.

handlers (functions/*/app.py) -> services -> domain; storage (shared/storage) depends on domain
types only. Domain code reaches no AWS SDK and no storage; nothing deployed imports devstack.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from devstack.template import PROJECT_ROOT

# Modules that compose domain rules with storage: what a handler or a scheduled job calls.
SERVICES = {
    "shared.segments.service",
    "shared.segments.statistics",
    "shared.serving.active_model",
    "shared.serving.experiments",
    "shared.training.job",
    "shared.nightly_triggers",
    "shared.campaigns.job",
    "shared.experiments.service",
}
# Cross-cutting glue every layer may use: configuration, errors, logging and metrics.
ANYWHERE = {"shared.config", "shared.errors", "shared.observability"}
AWS_SDKS = ("boto3", "botocore")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")


def layer(module: str) -> str:
    if module.startswith("functions."):
        return "handler"
    if module in SERVICES:
        return "service"
    if module.startswith("shared.storage"):
        return "storage"
    if module in ANYWHERE or module in ("shared.api", "shared.http_params", "shared.auth"):
        return "glue"
    return "domain"


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (also inside functions: a lazy import is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


DEPLOYED = sorted([*(PROJECT_ROOT / "shared").rglob("*.py"), *(PROJECT_ROOT / "functions").glob("*/app.py")])
MAY_IMPORT = {
    "domain": {"domain", "glue"},
    "storage": {"domain", "storage", "glue"},
    "service": {"domain", "storage", "service", "glue"},
    "handler": {"domain", "storage", "service", "glue"},  # a handler wires stores into services
    "glue": {"domain", "glue"},
}


@pytest.mark.parametrize("path", DEPLOYED, ids=lambda p: module_name(p))
def test_each_module_imports_only_the_layers_below_it(path: Path):
    own = layer(module_name(path))
    project = {m for m in imports(path) if m.split(".")[0] in ("shared", "functions")}
    wrong = sorted(m for m in project if m != "shared" and layer(m) not in MAY_IMPORT[own])
    assert not wrong, f"{module_name(path)} ({own}) imports {wrong}"
    assert not {m for m in imports(path) if m.split(".")[0] == "devstack"}, "deployed code imports devstack"
    if own == "domain":
        assert not {m for m in imports(path) if m.split(".")[0] in AWS_SDKS}, "domain code reaches AWS"


def test_the_rule_sees_every_layer():
    """A rule that classifies nothing as storage or service would pass vacuously."""
    seen = {layer(module_name(path)) for path in DEPLOYED}
    assert seen == {"domain", "storage", "service", "handler", "glue"}
