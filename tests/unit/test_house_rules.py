"""House rules a file scan can check (the project's house rules): no non-test module over 400 lines, no sys.path
manipulation, every entry module and package shipped by pyproject.toml, no module importing a face
(pretrain, evaluate, predict, visualize), and no utils module named like a standard-library one. Scans of the files
git tracks (and of the utils package): fast, no subprocess."""
import ast
import fnmatch
import os
import re
import struct
import sys

import pytest

from tests.helpers import REPO_ROOT

MAX_LINES = 400
FACES = ("pretrain", "evaluate", "predict", "visualize")  # the top-level entry modules nothing else imports
TESTS_DIR = "tests"


# ----------------------------------------------------------------------------- what git tracks


def git_dir(root: str) -> str:
    """The repository's git directory; in a worktree `.git` is a file naming it ("gitdir: PATH")."""
    dot_git = os.path.join(root, ".git")
    if os.path.isfile(dot_git):
        with open(dot_git) as f:
            target = f.read().split("gitdir:", 1)[1].strip()
        return target if os.path.isabs(target) else os.path.join(root, target)
    return dot_git


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """git's offset varint (index v4 path compression): (value, position after it)."""
    byte = data[pos]
    value = byte & 0x7F
    while byte & 0x80:
        pos += 1
        byte = data[pos]
        value = ((value + 1) << 7) | (byte & 0x7F)
    return value, pos + 1


def index_paths(index_file: str) -> set[str]:
    """The paths in a git index (versions 2 to 4; see git's Documentation/gitformat-index.txt)."""
    with open(index_file, "rb") as f:
        data = f.read()
    signature, version, count = struct.unpack(">4sII", data[:12])
    assert signature == b"DIRC" and version in (2, 3, 4), f"{index_file}: unsupported git index (version {version})"
    paths, pos, previous = set(), 12, b""
    for _ in range(count):
        start = pos
        (flags,) = struct.unpack(">H", data[pos + 60:pos + 62])
        pos += 62 + (2 if version >= 3 and flags & 0x4000 else 0)  # the extended flags
        if version == 4:  # the path is the previous one, less `strip` bytes, plus what follows
            strip, pos = _varint(data, pos)
            end = data.index(b"\0", pos)
            path = previous[:len(previous) - strip] + data[pos:end]
            pos = end + 1
        else:  # NUL-padded to a multiple of 8 bytes
            end = data.index(b"\0", pos)
            path = data[pos:end]
            pos = start + (end - start + 8) // 8 * 8
        paths.add(path.decode())
        previous = path
    return paths


def tracked_files() -> list[str]:
    """Paths (relative to the repository root, '/'-separated) of the files git tracks that exist."""
    paths = index_paths(os.path.join(git_dir(REPO_ROOT), "index"))
    return sorted(p for p in paths if os.path.isfile(os.path.join(REPO_ROOT, p)))


def is_test_file(path: str) -> bool:
    return path.split("/")[0] == TESTS_DIR


def project_python_files() -> list[str]:
    """The tracked non-test Python files; asserts the scan found a plausible number of them."""
    found = [p for p in tracked_files() if p.endswith(".py") and not is_test_file(p)]
    assert len(found) >= 50 and "pretrain.py" in found, f"the scan found only {found}"
    return found


def read(path: str) -> str:
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
        return f.read()


# ----------------------------------------------------------------------------- imports


def module_name(path: str) -> str:
    """The dotted module name of a repository file: 'benchmarks/gpu/flops.py' -> 'benchmarks.gpu.flops'."""
    parts = os.path.relpath(os.path.join(REPO_ROOT, path), REPO_ROOT).replace(os.sep, "/")[:-len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: str) -> set[str]:
    """Every module `path` (relative to the repository root, or absolute) imports, anywhere in it (inside
    functions too), as absolute dotted names: `import a.b` gives 'a.b'; `from a.b import c` gives 'a.b' and
    'a.b.c' (c may be a submodule); relative imports are resolved against the file's package."""
    full = path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)
    with open(full, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=full)
    package = module_name(full).split(".")
    if not full.endswith("__init__.py"):
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x, from ..a import x
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def faces_imported(path: str) -> set[str]:
    return {name.split(".")[0] for name in imports_of(path)} & set(FACES)


# ----------------------------------------------------------------------------- sys.path


def sys_path_uses(source: str) -> list[int]:
    """Lines that touch sys.path (or site.addsitedir) or branch on `__package__`, the signs of a script
    making its own imports work."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                (node.value.id, node.attr) in (("sys", "path"), ("site", "addsitedir"))):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module in ("sys", "site") and any(
                alias.name in ("path", "addsitedir") for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id == "__package__":
            lines.append(node.lineno)
    return sorted(lines)


# ----------------------------------------------------------------------------- pyproject.toml


def toml_string_list(text: str, table: str, key: str, required: bool = True) -> list[str]:
    """The strings of `key = [...]` in `[table]` of a TOML text ([] when absent and not `required`): enough
    for pyproject's string lists, and no tomllib needed (Python 3.10)."""
    sections = re.split(r"^\[([^\]\n]+)\][ \t]*$", text, flags=re.M)
    bodies = {name.strip(): body for name, body in zip(sections[1::2], sections[2::2])}
    assert table in bodies, f"pyproject.toml has no [{table}]"
    found = re.search(rf"^{re.escape(key)}\s*=\s*\[(.*?)\]", bodies[table], flags=re.M | re.S)
    if not found and not required:
        return []
    assert found, f"pyproject.toml [{table}] has no {key} = [...]"
    return re.findall(r'"([^"]*)"', re.sub(r"#[^\n]*", "", found.group(1)))


def shipped_by(package: str, include: list[str], exclude: list[str]) -> bool:
    """Whether setuptools' packages.find with these patterns selects `package` (fnmatch, as setuptools)."""
    return (any(fnmatch.fnmatchcase(package, p) for p in include)
            and not any(fnmatch.fnmatchcase(package, p) for p in exclude))


def pyproject_lists() -> tuple[list[str], list[str], list[str]]:
    """(py-modules, packages.find include, packages.find exclude) of pyproject.toml."""
    text = read("pyproject.toml")
    modules = toml_string_list(text, "tool.setuptools", "py-modules")
    include = toml_string_list(text, "tool.setuptools.packages.find", "include")
    exclude = toml_string_list(text, "tool.setuptools.packages.find", "exclude", required=False)
    return modules, include, exclude


# ----------------------------------------------------------------------------- the rules


def test_no_project_module_is_over_the_line_limit():
    too_long = {}
    for path in project_python_files():
        count = len(read(path).splitlines())
        if count > MAX_LINES:
            too_long[path] = count
    assert too_long == {}, f"over {MAX_LINES} lines (split it by job): {too_long}"


def test_no_sys_path_manipulation():
    offenders = {path: lines for path in project_python_files() if (lines := sys_path_uses(read(path)))}
    assert offenders == {}, f"sys.path / __package__ hacks (the editable install makes them unneeded): {offenders}"


def test_pyproject_ships_every_entry_module_and_package():
    modules, include, exclude = pyproject_lists()
    assert "pretrain" in modules and "models*" in include, (modules, include)
    files = tracked_files()
    entry_modules = [p[:-len(".py")] for p in files if "/" not in p and p.endswith(".py")]
    assert len(entry_modules) >= 4, entry_modules
    assert sorted(set(entry_modules) - set(modules)) == [], "top-level modules missing from py-modules"
    assert sorted(set(modules) - set(entry_modules)) == [], "py-modules names a module that is not there"

    inits = [p for p in files if p.endswith("/__init__.py") and not is_test_file(p)]
    assert len(inits) >= 8, inits
    packages = {p[:-len("/__init__.py")] for p in inits}
    # setuptools descends only into packages: a package under a plain directory is never found.
    orphans = sorted(p for p in packages if "/" in p and p.rsplit("/", 1)[0] not in packages)
    assert orphans == [], f"packages whose parent directory has no __init__.py: {orphans}"
    dotted = sorted(p.replace("/", ".") for p in packages)
    missing = [p for p in dotted if not shipped_by(p, include, exclude)]
    assert missing == [], f"packages not in pyproject's packages.find include {include}: {missing}"


def test_no_module_imports_a_face():
    importers = {path: sorted(faces) for path in project_python_files() if (faces := faces_imported(path))}
    assert importers == {}, f"modules importing an entry point {FACES} (move what they need below the faces): " \
                            f"{importers}"


def test_no_module_shadows_the_standard_library():
    import pkgutil

    import utils
    names = {module.name for module in pkgutil.iter_modules(utils.__path__)}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


# ----------------------------------------------------------------------------- the scanners can fail


def test_the_scanners_find_what_they_look_for(tmp_path):
    assert sys_path_uses("import sys\nx = 1\nsys.path.insert(0, 'here')\n") == [3]
    assert sys_path_uses("from sys import path\n") == [1]
    assert sys_path_uses("if __package__:\n    pass\n") == [1]
    assert sys_path_uses("import sys\nprint(sys.argv)\n") == []

    module = tmp_path / "module.py"
    module.write_text("import os.path\nfrom models import layers\n\n\ndef late():\n    from evaluate import run\n")
    assert imports_of(str(module)) == {"os.path", "models", "models.layers", "evaluate", "evaluate.run"}
    assert faces_imported(str(module)) == {"evaluate"}
    assert imports_of("benchmarks/gpu_check.py") >= {"benchmarks.gpu.orchestrate", "utils.cli"}

    assert shipped_by("benchmarks.gpu", ["benchmarks*"], []) and not shipped_by("tests", ["benchmarks*"], [])
    assert not shipped_by("viz.extra", ["viz*"], ["viz.*"])
    text = '[tool.a]\nkeys = ["x",  # why\n  "y"]\n\n[tool.a.b]\nkeys = ["z"]\n'
    assert toml_string_list(text, "tool.a", "keys") == ["x", "y"]
    assert toml_string_list(text, "tool.a.b", "keys") == ["z"]
    with pytest.raises(AssertionError, match="no keys"):
        toml_string_list("[tool.a]\nother = []\n", "tool.a", "keys")
    assert toml_string_list("[tool.a]\nother = []\n", "tool.a", "keys", required=False) == []


def test_the_index_reader_sees_the_tracked_files():
    files = tracked_files()
    assert "pyproject.toml" in files and "tests/helpers.py" in files
    assert len(files) >= 100, len(files)


# ----------------------------------------------------------------------------- layers (docs/README.md)
# Lowest first: a module imports project modules of its own layer or lower ones only. Faces (the last
# layer) import no other face.
LAYERS = (
    ("utils",),
    ("dataset", "rundir"),
    ("models",),
    ("evaluators", "viz"),
    ("training",),
    ("pretrain", "evaluate", "predict", "visualize", "kaggle", "benchmarks"),
)
LAYER_OF = {top: rank for rank, tops in enumerate(LAYERS) for top in tops}


def project_modules() -> dict[str, str]:
    """Dotted module name -> path, for every non-test Python file git tracks."""
    return {module_name(path): path for path in project_python_files()}


def project_imports(path: str, modules: dict[str, str]) -> set[str]:
    """The project modules `path` imports. `from a import b` counts as importing `a.b` when that is a module,
    else `a`; a package's own ancestors (run on import anyway) are not counted."""
    own = module_name(path)
    found = set()
    for name in imports_of(path):
        if name in modules:
            found.add(name)
        elif name.rsplit(".", 1)[0] in modules and name.count("."):
            found.add(name.rsplit(".", 1)[0])
    ancestors = {own.rsplit(".", depth)[0] for depth in range(1, own.count(".") + 1)}
    return {name for name in found if name != own and name not in ancestors}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        # `from a import b` adds `a` too when b is an attribute of package a: drop `a` if `a.b` is also there.
        imported = project_imports(path, modules)
        graph[name] = {m for m in imported if not any(o.startswith(m + ".") for o in imported)}
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        top = module.split(".")[0]
        if top not in LAYER_OF:
            problems.append(f"{module}: in no layer (add its package to LAYERS and docs/README.md)")
            continue
        for other in sorted(imported):
            other_top = other.split(".")[0]
            rank, other_rank = LAYER_OF[top], LAYER_OF.get(other_top)
            if other_rank is None or other_rank > rank:
                problems.append(f"{module} imports {other} (a higher layer)")
            elif rank == len(LAYERS) - 1 and other_rank == rank and other_top != top:
                problems.append(f"{module} imports the face {other}")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_imports_follow_the_layers():
    graph = import_graph()
    assert len(graph) >= 50 and graph["training.loop"], "the import graph is implausibly small"
    assert layer_violations(graph) == []


def test_the_import_graph_has_no_cycle():
    assert import_cycles(import_graph()) == []


def test_the_layer_checks_can_fail():
    graph = {"utils.a": {"models.b"}, "models.b": {"utils.a"}, "evaluate": {"predict"}, "stray.x": set()}
    assert layer_violations(graph) == ["evaluate imports the face predict", "stray.x: in no layer (add its package "
                                       "to LAYERS and docs/README.md)", "utils.a imports models.b (a higher layer)"]
    assert import_cycles(graph) == [["models.b", "utils.a"]]
