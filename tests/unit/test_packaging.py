"""Packaging, without sam: every function and layer has a build that works on a machine with no
Docker and no python3.12, and devstack.package_check catches what would break on Lambda."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack import package_check
from devstack.template import PROJECT_ROOT, load_template, resources

TEMPLATE = load_template()
FUNCTIONS = resources(TEMPLATE, "AWS::Serverless::Function")
LAYERS = resources(TEMPLATE, "AWS::Serverless::LayerVersion")


def code_dir(logical_id: str) -> Path:
    props = FUNCTIONS.get(logical_id) or LAYERS[logical_id]
    return PROJECT_ROOT / (props.get("CodeUri") or props["ContentUri"])


@pytest.mark.parametrize("logical_id", [*FUNCTIONS, *LAYERS])
def test_every_function_and_layer_is_built_by_its_own_makefile(logical_id: str):
    # sam's python builder needs a local python3.12 or Docker; a Makefile needs neither.
    assert TEMPLATE["Resources"][logical_id].get("Metadata", {}).get("BuildMethod") == "makefile"
    makefile = code_dir(logical_id) / "Makefile"
    assert makefile.is_file(), f"{logical_id}: no {makefile.relative_to(PROJECT_ROOT)}"
    assert re.search(rf"^build-{logical_id}:", makefile.read_text(), re.M), \
        f"{makefile.relative_to(PROJECT_ROOT)} has no target build-{logical_id}"


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_handler_is_in_its_code_dir(logical_id: str):
    module, _, name = FUNCTIONS[logical_id]["Handler"].rpartition(".")
    source = code_dir(logical_id) / f"{module}.py"
    defined = {node.name for node in ast.parse(source.read_text()).body
               if isinstance(node, ast.FunctionDef)}
    assert name in defined, f"{source.relative_to(PROJECT_ROOT)} defines no {name}"


def test_every_function_makefile_is_the_one_recipe():
    recipes = {name: (code_dir(name) / "Makefile").read_text().replace(name, "<function>")
               for name in FUNCTIONS}
    assert len(set(recipes.values())) == 1, "functions/*/Makefile differ beyond their target names"
    assert "$(BUILD_FUNCTION)" in next(iter(recipes.values()))
    recipe = (PROJECT_ROOT / "functions" / "lambda.mk").read_text()
    # Wheels for Lambda's CPython 3.12 and Amazon Linux 2023's glibc, whatever this machine runs.
    for flag in ("-r requirements.txt", "--python-version 3.12", "--implementation cp",
                 "--only-binary=:all:", "auditwheel repair", "--plat manylinux_2_34_x86_64"):
        assert flag in recipe, flag
    assert package_check.RUNTIME_SYMBOL_VERSIONS["GLIBC"] == (2, 34)


def test_functions_with_requirements_pin_nothing_the_layer_already_has():
    layer = _requirement_names(PROJECT_ROOT / "shared" / "requirements.txt")
    for name in FUNCTIONS:
        requirements = code_dir(name) / "requirements.txt"
        if requirements.is_file():
            assert not (_requirement_names(requirements) & layer), f"{name} duplicates the layer"


def _requirement_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[\[<>=~!; ]", line, maxsplit=1)[0].lower() for line in lines if line}


@pytest.mark.skipif(not (shutil.which("make") and shutil.which("tar")), reason="needs make and tar")
def test_the_layer_gets_every_module_of_the_shared_package(tmp_path: Path):
    subprocess.run(["make", "--silent", "-C", str(PROJECT_ROOT / "shared"), "shared-package",
                    f"ARTIFACTS_DIR={tmp_path}"], check=True, capture_output=True)
    source = PROJECT_ROOT / "shared"
    expected = {p.relative_to(source) for p in source.rglob("*.py") if "__pycache__" not in p.parts}
    built = {p.relative_to(tmp_path / "python" / "shared") for p in tmp_path.rglob("*.py")}
    assert {Path("training/pipeline.py"), Path("serving/model.py"), Path("segments/tags.py")} <= expected
    assert built == expected


# --- devstack.package_check on small built trees ---------------------------------------------

BUILT_TEMPLATE = """
Globals:
  Function:
    Layers: [!Ref SharedLayer]
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: SharedLayer}
  ShopFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: ShopFunction, Handler: app.lambda_handler}
"""
SOURCE_TEMPLATE = """
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: shared/}
"""


def built_tree(root: Path, files: dict[str, str]) -> Path:
    """A sam build output (and its source) with one function, ShopFunction, and SharedLayer."""
    layer_files = {"shared/__init__.py": "", "shared/rules.py": "import json\n"}
    tree = {"build/template.yaml": BUILT_TEMPLATE, "source/template.yaml": SOURCE_TEMPLATE,
            **{f"source/{path}": text for path, text in layer_files.items()},
            **{f"build/SharedLayer/python/{path}": text for path, text in layer_files.items()},
            "build/ShopFunction/app.py": "import shared.rules\n\ndef lambda_handler(event, context):\n    return {}\n",
            **files}
    for path, text in tree.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root / "build"


def run_check(build: Path) -> tuple[list[str], str]:
    problems, _, _ = package_check.check(build, zipped=False, source_root=build.parent / "source")
    return problems, "\n".join(problems)


def test_package_check_passes_a_small_function(tmp_path: Path):
    problems, _ = run_check(built_tree(tmp_path, {}))
    assert problems == []


def test_package_check_fails_a_function_over_250_mb_with_its_layers(tmp_path: Path):
    build = built_tree(tmp_path, {})
    with (build / "SharedLayer" / "python" / "weights.bin").open("wb") as f:
        f.truncate(package_check.UNZIPPED_LIMIT)  # sparse: takes no disk
    problems, text = run_check(build)
    assert len(problems) == 1 and "ShopFunction" in text and "over Lambda's 262,144,000" in text


def test_package_check_fails_a_module_left_out_of_the_layer(tmp_path: Path):
    build = built_tree(tmp_path, {"source/shared/training/pipeline.py": ""})
    _, text = run_check(build)
    assert "1 of the 3 modules of shared/ are not in the built layer: training/pipeline.py" in text


def test_package_check_fails_an_import_time_import_and_only_notes_one_inside_a_function(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rules = "import numpy\n\ndef fit():\n    import implicit\n"
    build = built_tree(tmp_path, {"build/SharedLayer/python/shared/rules.py": rules,
                                  "source/shared/rules.py": rules})
    problems, text = run_check(build)
    assert len(problems) == 1
    assert "ShopFunction cannot start" in text and "numpy (app.py:1 -> shared/rules.py:1)" in text
    assert "implicit (app.py:1 -> shared/rules.py:4)" in capsys.readouterr().out


def test_package_check_ignores_imports_only_type_checkers_see(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rules = ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import numpy\nelse:\n    import scipy\n\n"
             "def fit():\n    import implicit\n")
    build = built_tree(tmp_path, {"build/SharedLayer/python/shared/rules.py": rules,
                                  "source/shared/rules.py": rules})
    problems, text = run_check(build)
    assert len(problems) == 1 and "scipy (app.py:1 -> shared/rules.py:6)" in text and "numpy" not in text
    assert "numpy" not in capsys.readouterr().out


needs_gcc = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")),
                               reason="needs gcc and readelf")


def openmp_extension(path: Path, rpath: str | None = None) -> None:
    """A small shared object that needs libgomp, as implicit's extensions do."""
    source = path.with_suffix(".c")
    source.write_text("#include <omp.h>\nint threads(void) { return omp_get_max_threads(); }\n")
    link = [f"-Wl,-rpath,{rpath}", "-Wl,--disable-new-dtags"] if rpath else []
    subprocess.run(["gcc", "-shared", "-fPIC", "-fopenmp", str(source), "-o", str(path), *link],
                   check=True, capture_output=True)
    source.unlink()


@needs_gcc
def test_package_check_fails_an_implicit_that_needs_the_systems_libgomp(tmp_path: Path):
    build = built_tree(tmp_path, {"build/ShopFunction/implicit/__init__.py": ""})
    openmp_extension(build / "ShopFunction" / "implicit" / "_als.so")
    _, text = run_check(build)
    assert "implicit/_als.so needs libgomp.so.1, which is neither bundled" in text
    assert "not bundled in the package (the python3.12 runtime does not promise one)" in text


@needs_gcc
def test_package_check_passes_an_implicit_with_libgomp_bundled_next_to_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    build = built_tree(tmp_path, {"build/ShopFunction/implicit/__init__.py": ""})
    libgomp = subprocess.run(["gcc", "-print-file-name=libgomp.so.1"], capture_output=True,
                             text=True, check=True).stdout.strip()
    (build / "ShopFunction" / "implicit.libs").mkdir()
    shutil.copy(libgomp, build / "ShopFunction" / "implicit.libs" / "libgomp.so.1")
    openmp_extension(build / "ShopFunction" / "implicit" / "_als.so", rpath="$ORIGIN/../implicit.libs")
    problems, _ = run_check(build)
    # (This machine's libgomp may need a newer glibc than Lambda's: not what this test is about.)
    assert not [p for p in problems if "bundled" in p]
    assert "libgomp bundled: implicit.libs/libgomp.so.1, linked by RPATH from 1 implicit extensions" \
        in capsys.readouterr().out
