"""After `sam build`: will each function fit in Lambda and start there?

    python -m devstack.package_check [--build-dir .aws-sam/build] [--no-zip]

Reads the built template and artifacts; checks that every module of a layer's source folder
(shared/) is in the built layer, and for each function:
- size: the function and its layers together, unzipped, within Lambda's 250 MB
  (262,144,000 bytes); the zipped sizes are printed too;
- imports: the handler exists, and every module it imports, and every module of this repository
  those reach, is in the function, its layers, the standard library or the runtime (boto3);
- native code: every shared library an extension needs is bundled and found through its RPATH,
  or comes with the python3.12 runtime (Amazon Linux 2023), whose glibc 2.34 none may exceed;
  implicit's extensions load libgomp from inside the package (readelf, then ldd).

Prints one line per function and exits 1 with every problem found.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devstack.template import PROJECT_ROOT, load_template, resources

BUILD_DIR = PROJECT_ROOT / ".aws-sam" / "build"
UNZIPPED_LIMIT = 262_144_000  # bytes: function code and all its layers, unzipped
MIB = 1024 * 1024

# What the python3.12 runtime brings besides the standard library.
RUNTIME_MODULES = frozenset({"awslambdaric", "boto3", "botocore", "s3transfer", "jmespath",
                             "dateutil", "urllib3", "six"})
# Still in the 3.11 standard library this runs on, gone from the 3.12 that Lambda runs.
GONE_IN_PY312 = frozenset({"asynchat", "asyncore", "distutils", "imp", "smtpd"})
STDLIB = frozenset(sys.stdlib_module_names) - GONE_IN_PY312

# Shared libraries taken as there on Amazon Linux 2023: glibc's, the GCC runtime and zlib, which
# manylinux wheels may leave out and numpy's and scipy's do. Not the rest of the manylinux list
# (libatomic, libnsl, X11, GL): nothing says Lambda has them.
RUNTIME_LIBS = frozenset({
    "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libmvec.so.1", "libdl.so.2", "librt.so.1",
    "libpthread.so.0", "libutil.so.1", "libanl.so.1", "libresolv.so.2",
    "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1",
})
# Newest symbol versions there: glibc 2.34, GCC 11's libstdc++.
RUNTIME_SYMBOL_VERSIONS = {"GLIBC": (2, 34), "GLIBCXX": (3, 4, 29)}


@dataclass(frozen=True)
class Artifact:
    """One built directory that Lambda unzips: a function's code or a layer."""

    name: str
    root: Path
    import_dirs: tuple[Path, ...]  # where Python finds modules in it, as on Lambda
    library_dirs: tuple[Path, ...]  # what Lambda's LD_LIBRARY_PATH adds for it


@dataclass(frozen=True)
class Function:
    name: str
    handler: str  # module.function, relative to the code
    code: Artifact
    layers: tuple[Artifact, ...]
    external_layers: tuple[str, ...]  # layers given by ARN, not built here

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        return (self.code, *self.layers)


def function_artifact(name: str, root: Path) -> Artifact:
    return Artifact(name, root, (root,), (root / "lib",))


def layer_artifact(name: str, root: Path) -> Artifact:
    python = root / "python"
    return Artifact(name, root, (python, python / "lib" / "python3.12" / "site-packages"),
                    (root / "lib",))


def built_functions(build_dir: Path) -> list[Function]:
    template = load_template(build_dir / "template.yaml")
    layers = {name: layer_artifact(name, build_dir / props["ContentUri"])
              for name, props in resources(template, "AWS::Serverless::LayerVersion").items()}
    global_layers = template.get("Globals", {}).get("Function", {}).get("Layers", [])
    functions = []
    for name, props in resources(template, "AWS::Serverless::Function").items():
        refs = [*global_layers, *props.get("Layers", [])]  # SAM appends a function's to Globals'
        ours = [r["Ref"] for r in refs if isinstance(r, dict) and r.get("Ref") in layers]
        functions.append(Function(
            name, props["Handler"], function_artifact(name, build_dir / props["CodeUri"]),
            tuple(layers[ref] for ref in ours),
            tuple(str(r) for r in refs if not (isinstance(r, dict) and r.get("Ref") in layers)),
        ))
    return functions


# --- size -----------------------------------------------------------------------------------

def files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file():
                yield path


def unzipped_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in files(root))


def zipped_bytes(root: Path) -> int:
    """Size of the zip sam deploy uploads (deflate, zlib's default level)."""
    with tempfile.TemporaryFile() as sink:
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files(root):
                archive.write(path, path.relative_to(root))
        return sink.tell()


def layer_source_problems(build_dir: Path, source_root: Path) -> tuple[list[str], list[str]]:
    """(problems, lines to print): every .py file of a layer's source folder must be in the built
    layer, under python/<folder name>/ (the package keeps its name, see shared/Makefile)."""
    built = resources(load_template(build_dir / "template.yaml"), "AWS::Serverless::LayerVersion")
    source_layers = resources(load_template(source_root / "template.yaml"),
                              "AWS::Serverless::LayerVersion")
    problems, lines = [], []
    for name, props in source_layers.items():
        source = source_root / props["ContentUri"]
        package = build_dir / built[name]["ContentUri"] / "python" / source.name
        modules = [p.relative_to(source) for p in source.rglob("*.py") if "__pycache__" not in p.parts]
        missing = sorted(str(m) for m in modules if not (package / m).is_file())
        if missing:
            problems.append(f"{name}: {len(missing)} of the {len(modules)} modules of "
                            f"{props['ContentUri']} are not in the built layer: {', '.join(missing)}")
        else:
            lines.append(f"{name}: all {len(modules)} modules of {props['ContentUri']} "
                         f"are in python/{source.name}/")
    return problems, lines


# --- imports --------------------------------------------------------------------------------

def module_file(module: str, dirs: Iterable[Path]) -> Path | None:
    """Where `import module` finds it in these directories: a .py, a package or an extension."""
    *parents, last = module.split(".")
    for directory in dirs:
        folder = directory.joinpath(*parents)
        for candidate in (folder / f"{last}.py", folder / last / "__init__.py"):
            if candidate.is_file():
                return candidate
        if (folder / last).is_dir():  # a namespace package
            return folder / last
        extensions = sorted(folder.glob(f"{last}.*so")) if folder.is_dir() else []
        if extensions:
            return extensions[0]
    return None


@dataclass(frozen=True)
class Import:
    module: str  # absolute
    line: int
    required: bool  # `from a import b`: a must exist; a.b may be a module or an attribute
    at_import: bool  # runs when the file is imported, not only when a function of it is called


def imports_in(source: Path, module: str) -> list[Import]:
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, True, at_import) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                parts = package.split(".")
                name = ".".join([*parts[: len(parts) - node.level + 1], *([name] if name else [])])
            found.append(Import(name, node.lineno, True, at_import))
            found.extend(Import(f"{name}.{alias.name}", node.lineno, False, at_import)
                         for alias in node.names)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the body is for type checkers; Python never runs it
                visit(child, at_import)
            return
        lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, at_import and not lazy)

    visit(ast.parse(source.read_text(), str(source)), True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def is_ours(module: str, handler_module: str) -> bool:
    """A module of this repository (the handler, the shared package), whose imports are followed."""
    top = module.split(".")[0]
    return top == handler_module.split(".")[0] or (PROJECT_ROOT / top / "__init__.py").is_file()


def import_problems(function: Function) -> tuple[list[str], list[str]]:
    """(problems, notes). A module missing at import time stops the function from starting; one
    imported only inside a function body breaks only the code path that calls it."""
    dirs = [d for artifact in function.artifacts for d in artifact.import_dirs]
    handler_module, _, handler_name = function.handler.rpartition(".")
    handler_file = module_file(handler_module, function.code.import_dirs)
    if handler_file is None or handler_file.suffix != ".py":
        return [f"{function.name}: handler module {handler_module} is not in {function.code.root}"], []
    tree = ast.parse(handler_file.read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    defined |= {target.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    problems = [] if handler_name in defined else [
        f"{function.name}: {handler_file.name} defines no {handler_name} at module level"]

    # Our files, first all those that run at import time, then those reached only from inside
    # functions; each with the chain of imports that reaches it.
    missing: dict[bool, dict[str, list[str]]] = {True: {}, False: {}}  # at import -> top -> chain
    reached: dict[Path, bool] = {handler_file: True}
    todo = {True: [(handler_file, handler_module, [])], False: []}
    while todo[True] or todo[False]:
        source, module, chain = (todo[True] or todo[False]).pop()
        at_import = reached[source]
        for imp in imports_in(source, module):
            if imp.module.split(".")[0] in STDLIB | RUNTIME_MODULES:
                continue
            eager = at_import and imp.at_import
            here = [*chain, f"{_shown(source, function)}:{imp.line}"]
            found = module_file(imp.module, dirs)
            if found is None and imp.required:
                missing[eager].setdefault(imp.module.split(".")[0], here)
            if found is None or not is_ours(imp.module, handler_module):
                continue
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
            parents = [(module_file(name, dirs), name) for name in _prefixes(imp.module)]
            for path, name in [*parents, (found, imp.module)]:
                if path is None or path.suffix != ".py":
                    continue
                if path not in reached or eager > reached[path]:
                    reached[path] = eager
                    todo[eager].append((path, name, here))

    def described(modules: dict[str, list[str]]) -> str:
        return "; ".join(f"{top} ({' -> '.join(chain)})" for top, chain in sorted(modules.items()))

    if missing[True]:
        problems.append(f"{function.name} cannot start: imported at import time, and in neither the "
                        f"function, its layers nor the python3.12 runtime: {described(missing[True])}")
    lazy = {top: chain for top, chain in missing[False].items() if top not in missing[True]}
    notes = [f"imported only inside functions, not packaged (those calls would fail on Lambda): "
             f"{described(lazy)}"] if lazy else []
    return problems, notes


def _shown(path: Path, function: Function) -> str:
    artifact = _artifact_of(path, function)
    return str(path.relative_to(next(d for d in artifact.import_dirs if path.is_relative_to(d))))


def _prefixes(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def _artifact_of(path: Path, function: Function) -> Artifact:
    return next(a for a in function.artifacts if path.is_relative_to(a.root))


# --- native libraries -----------------------------------------------------------------------

@dataclass(frozen=True)
class Elf:
    path: Path
    needed: tuple[str, ...]
    rpath: tuple[Path, ...]  # RPATH or RUNPATH, $ORIGIN resolved
    symbol_versions: tuple[tuple[str, tuple[int, ...]], ...]  # ("GLIBC", (2, 27)), ...


_DYNAMIC = re.compile(r"\((NEEDED|RPATH|RUNPATH)\)\s+[^[]*\[([^\]]*)\]")
_VERSION = re.compile(r"Name: (GLIBCXX|GLIBC)_([0-9.]+)\b")


def read_elf(path: Path) -> Elf:
    out = subprocess.run(["readelf", "--dynamic", "--version-info", "--wide", str(path)],
                         capture_output=True, text=True, check=True).stdout
    needed, rpath = [], []
    for kind, value in _DYNAMIC.findall(out):
        if kind == "NEEDED":
            needed.append(value)
        else:
            rpath += [Path(p.replace("$ORIGIN", str(path.parent))) for p in value.split(":") if p]
    versions = {(lib, tuple(int(n) for n in number.split("."))) for lib, number in _VERSION.findall(out)}
    return Elf(path, tuple(needed), tuple(rpath), tuple(sorted(versions)))


def cached_elf(path: Path, elves: dict[Path, Elf]) -> Elf:
    if path not in elves:
        elves[path] = read_elf(path)
    return elves[path]


def elf_files(root: Path) -> list[Path]:
    found = []
    for path in files(root):
        if ".so" in path.name:
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def native_problems(function: Function, elves: dict[Path, Elf]) -> list[str]:
    library_dirs = [d for artifact in function.artifacts for d in artifact.library_dirs]
    problems = []
    for artifact in function.artifacts:
        for path in elf_files(artifact.root):
            elf = cached_elf(path, elves)
            where = f"{artifact.name}/{path.relative_to(artifact.root)}"
            for lib in elf.needed:
                bundled = any((d / lib).is_file() for d in (*elf.rpath, *library_dirs))
                if lib not in RUNTIME_LIBS and not bundled:
                    problems.append(f"{function.name}: {where} needs {lib}, which is neither bundled "
                                    "(RPATH) nor part of the python3.12 runtime")
            for lib, version in elf.symbol_versions:
                if version > RUNTIME_SYMBOL_VERSIONS[lib]:
                    needs, newest = (".".join(map(str, v))
                                     for v in (version, RUNTIME_SYMBOL_VERSIONS[lib]))
                    problems.append(f"{function.name}: {where} needs {lib}_{needs}; "
                                    f"Lambda's python3.12 runtime has {lib} up to {newest}")
    return problems


def libgomp_report(function: Function, elves: dict[Path, Elf]) -> tuple[str | None, list[str]]:
    """implicit's OpenMP runtime: which bundled file each extension loads, by readelf and by ldd."""
    implicit = next((d / "implicit" for a in function.artifacts for d in a.import_dirs
                     if (d / "implicit" / "__init__.py").is_file()), None)
    if implicit is None:
        return None, []
    root = _artifact_of(implicit, function).root
    extensions = [cached_elf(p, elves) for p in elf_files(implicit)]
    users = [e for e in extensions if any(lib.startswith("libgomp") for lib in e.needed)]
    if not users:
        return None, [f"{function.name}: no extension of implicit links libgomp; has the wheel changed?"]
    problems, bundled, by_ldd = [], set(), 0
    for elf in users:
        lib = next(lib for lib in elf.needed if lib.startswith("libgomp"))
        where = elf.path.relative_to(root)
        local = next((d / lib for d in elf.rpath if (d / lib).is_file()), None)
        if local is None or not local.resolve().is_relative_to(root.resolve()):
            problems.append(f"{function.name}: {where} needs {lib}, not bundled in the package "
                            "(the python3.12 runtime does not promise one): build with auditwheel repair")
            continue
        resolved = _ldd(elf.path).get(lib)
        if resolved is not None and not resolved.resolve().is_relative_to(root.resolve()):
            problems.append(f"{function.name}: ldd loads {lib} for {where} from {resolved}, "
                            "outside the package")
            continue
        by_ldd += resolved is not None
        bundled.add(local.resolve().relative_to(root.resolve()))
    summary = (f"libgomp bundled: {', '.join(map(str, sorted(bundled)))}, linked by RPATH from "
               f"{len(users)} implicit extensions (readelf; ldd agrees for {by_ldd})")
    return (None if problems else summary), problems


def _ldd(path: Path) -> dict[str, Path]:
    try:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return {}
    return {m[1]: Path(m[2]) for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M)}


# --- report ---------------------------------------------------------------------------------

def mib(size: int) -> str:
    return f"{size / MIB:7.1f}"


def check(build_dir: Path, zipped: bool = True, source_root: Path = PROJECT_ROOT
          ) -> tuple[list[str], int, int]:
    """Print the report; return (problems, checks passed, checks failed)."""
    if not (build_dir / "template.yaml").is_file():
        return [f"no built template in {build_dir}: run `./dev package` (or sam build) first"], 0, 1
    layer_problems, layer_lines = layer_source_problems(build_dir, source_root)
    checks = [layer_problems]  # one list of problems per check; empty when it passes
    print(*layer_lines, sep="\n")

    functions = built_functions(build_dir)
    artifacts = list({a.root: a for f in functions for a in f.artifacts})
    with ThreadPoolExecutor() as pool:  # zlib lets go of the GIL: zip on every core
        unzipped = dict(zip(artifacts, pool.map(unzipped_bytes, artifacts)))
        packed = dict(zip(artifacts, pool.map(zipped_bytes, artifacts))) if zipped else {}

    print(f"Lambda's limit: {UNZIPPED_LIMIT:,} bytes ({UNZIPPED_LIMIT // MIB} MiB) unzipped, "
          "function and layers together. Sizes in MiB.")
    print(f"{'function':<20} {'code':>7} {'layers':>7} {'total':>7} {'of limit':>8}"
          + (f" {'zip code':>8} {'zip layers':>10}" if zipped else ""))
    elves: dict[Path, Elf] = {}
    for function in functions:
        code = unzipped[function.code.root]
        layers = sum(unzipped[a.root] for a in function.layers)
        total = code + layers
        line = f"{function.name:<20} {mib(code)} {mib(layers)} {mib(total)} {total / UNZIPPED_LIMIT:8.0%}"
        if zipped:
            zipped_layers = sum(packed[a.root] for a in function.layers)
            line += f" {mib(packed[function.code.root]):>8} {mib(zipped_layers):>10}"
        print(line)
        if function.external_layers:
            print(f"  not counted: layers built elsewhere {', '.join(function.external_layers)}")
        checks.append([] if total <= UNZIPPED_LIMIT else [
            f"{function.name}: {total:,} bytes unzipped with its layers, over Lambda's "
            f"{UNZIPPED_LIMIT:,} by {total - UNZIPPED_LIMIT:,}"])
        missing_modules, notes = import_problems(function)
        checks.append(missing_modules)
        gomp, gomp_problems = libgomp_report(function, elves)
        checks.append(native_problems(function, elves) + gomp_problems)
        for note in ([gomp] if gomp else []) + [f"note: {note}" for note in notes]:
            print(f"  {note}")
    failed = sum(1 for found in checks if found)
    return [problem for found in checks for problem in found], len(checks) - failed, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--no-zip", action="store_true", help="skip the zipped sizes (faster)")
    args = parser.parse_args(argv)
    problems, passed, failed = check(args.build_dir, zipped=not args.no_zip)
    if problems:
        print("\npackage check FAILED:", *problems, sep="\n  ", file=sys.stderr)
    print(f"package_check: {passed} passed, {failed} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
