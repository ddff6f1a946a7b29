"""Which way imports go (docs/architecture.md, "Where things live"), read from the sources.

- `stacks/` and `app.py` import from `churnops` only what the CDK app hands the deployed code
  (`churnops.wiring`), the data contract (the API's request model) and the error type: a
  runtime module would pull its data libraries into every `cdk synth`.
- Twin-only code lives in `churnops/local/`; deployed code (handlers, Glue scripts, the runtime
  package) never imports it. Only the commands that drive the twin do.
- `churnops/wiring.py` is standard library only: the stacks import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACKS_MAY_IMPORT = {"churnops.wiring", "churnops.contract", "churnops.errors"}
# The commands that start, drive or stand in for the twin (and the CLI that lists them).
TWIN_DRIVERS = {
    "churnops/commands/demo.py",
    "churnops/commands/local.py",
    "churnops/commands/serve.py",
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from churnops import wiring` imports the module churnops.wiring
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize(
    "path", [*_sources("stacks"), REPO / "app.py"], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_cdk_app_imports_only_the_wire_contract(path: Path) -> None:
    churnops = {
        name
        for name in _imports(path)
        if name.startswith("churnops.") and name.count(".") == 1  # the module, not its names
    }
    assert churnops <= STACKS_MAY_IMPORT, f"{path.name} imports {churnops - STACKS_MAY_IMPORT}"


def test_deployed_code_never_imports_the_twin() -> None:
    offenders = []
    for path in _sources("churnops", "lambdas", "glue_jobs", "containers"):
        relative = str(path.relative_to(REPO))
        if relative.startswith("churnops/local/") or relative in TWIN_DRIVERS:
            continue
        twin = {
            n for n in _imports(path) if n == "churnops.local" or n.startswith("churnops.local.")
        }
        if twin:
            offenders.append(f"{relative}: {sorted(twin)}")
    assert not offenders, offenders


def test_the_wire_contract_is_standard_library_only() -> None:
    import sys

    names = _imports(REPO / "churnops" / "wiring.py")
    packages = {name.split(".")[0] for name in names}
    assert packages <= set(sys.stdlib_module_names) | {"churnops"}, packages
    churnops = {n for n in names if n.startswith("churnops.") and n.count(".") == 1}
    assert churnops <= {"churnops.errors"}, churnops
