"""The code that weighs the interactions, fits and scores is named by method.CODE: a change to it
must raise CODE (later runs then take no blend choice or fit made the old way) or be recorded as
one that changes no fit and no score. Comments and docstrings are not part of it."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

from devstack.template import PROJECT_ROOT
from shared.training import method

# What decides a fit's factors or a blend's scores: the matrix (the Scan path's Python and the
# export path's SQL), ALS and its starts, the parts, the ranking and the metrics that choose.
SHAPING = ("shared/training/matrix.py", "shared/training/interactions.py", "shared/training/pipeline.py",
           "shared/training/hybrid.py", "shared/training/blend_ranking.py", "shared/training/evaluation.py",
           "shared/training/earlier_fits.py", "shared/storage/sql/interactions.sql", "shared/storage/sql/codes.sql",
           "shared/storage/sql/ids.sql")
# The fingerprint of SHAPING for each CODE. A change that leaves fits and scores as they were
# (a rename, a faster way to the same numbers: tests compare them) replaces CODE's fingerprint;
# one that does not raises CODE and adds its own.
FINGERPRINTS = {1: "0c2795631ab9b68e", 2: "1fdf0cec9605cdbc"}


def code_of(path: str, root: Path = PROJECT_ROOT) -> str:
    """The file as it runs: Python without comments or docstrings, SQL without comments or
    runs of spaces."""
    text = (root / path).read_text()
    if path.endswith(".sql"):
        return " ".join(re.sub(r"--[^\n]*", "", text).split())
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def fingerprint() -> str:
    digest = hashlib.sha256()
    for path in SHAPING:
        digest.update(f"{path}\n{code_of(path)}\n".encode())
    return digest.hexdigest()[:16]


def test_the_code_that_fits_and_scores_is_the_one_its_method_names():
    assert fingerprint() == FINGERPRINTS.get(method.CODE), (
        f"The code that weighs the interactions, fits or scores changed ({', '.join(SHAPING)}). If a fit's "
        f"factors or a blend's scores can differ, raise CODE in shared/training/method.py and record "
        f"FINGERPRINTS[{method.CODE + 1}] = {fingerprint()!r}; if not, FINGERPRINTS[{method.CODE}] = {fingerprint()!r}.")


def test_the_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path):
    (tmp_path / "a.py").write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x * 2  # double\n')
    (tmp_path / "b.sql").write_text("SELECT a,\n  b -- the b\nFROM t\n")
    first = code_of("a.py", tmp_path), code_of("b.sql", tmp_path)

    (tmp_path / "a.py").write_text('"""Other."""\n\n\ndef f(x):\n    return x * 2\n')
    (tmp_path / "b.sql").write_text("-- why\nSELECT a, b\nFROM t\n")
    assert (code_of("a.py", tmp_path), code_of("b.sql", tmp_path)) == first

    (tmp_path / "a.py").write_text("def f(x):\n    return x * 3\n")
    (tmp_path / "b.sql").write_text("SELECT a, c FROM t\n")
    changed = code_of("a.py", tmp_path), code_of("b.sql", tmp_path)
    assert changed[0] != first[0] and changed[1] != first[1]


def test_a_run_names_the_method_it_fitted_with_and_the_library_it_fitted_on():
    import implicit

    assert method.method() == f"{method.CODE}; implicit {implicit.__version__}"
