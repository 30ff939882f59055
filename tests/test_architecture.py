"""The three floors of Tandem, checked on the source (static, so a lazy import counts too).

- core/ is the ground floor: it imports no role and not services/.
- The roles (learner, actors, reward_server) import core/ and never each other, nor services/.
- services/ (driver, CLI, embedded server) stands on top and may import everything below it.
- Each heavy library has one home: deepspeed only in learner/engine.py, vllm only under actors/,
  ray only where actors are created and wired, redis only in the Redis buffer.
- learner/algorithms imports torch (and the standard library) only.
"""

import ast
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "learner", "actors", "reward_server", "services")
ROLES = ("learner", "actors", "reward_server")
TOP = "services"

# library -> the files (globs, relative to the repo) allowed to import it
LIBRARY_HOMES = {
    "deepspeed": ["learner/engine.py"],
    "vllm": ["actors/*.py", "actors/**/*.py"],
    "ray": [
        "actors/pool.py",
        "learner/ranks.py",
        "services/orchestration/*.py",
        "core/buffer/remote.py",
        "core/weight_sync/ray_transport.py",
    ],
    "redis": ["core/buffer/redis_buffer.py", "core/prompts/redis_source.py"],
}
ALGORITHMS_ALLOWED = {"torch", "__future__"} | set(sys.stdlib_module_names)


def source_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add(_resolve_relative(path, node))
    return found


def _resolve_relative(path: Path, node: ast.ImportFrom) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    base = parts[: len(parts) - node.level]
    return ".".join(base + ([node.module] if node.module else []))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_scan_sees_the_packages() -> None:
    files = [relative(path) for path in source_files()]
    assert "core/config/root.py" in files and "actors/engine.py" in files
    assert "vllm" in imported_modules(ROOT / "actors/engine.py")


@pytest.mark.parametrize("role", ROLES)
def test_roles_never_import_each_other(role: str) -> None:
    others = [other for other in ROLES if other != role]
    offenders = [
        f"{relative(path)} imports {module}"
        for path in (ROOT / role).rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in others
    ]
    assert not offenders, "roles share only core/: " + "; ".join(offenders)


@pytest.mark.parametrize("package", ("core", *ROLES))
def test_nothing_below_the_top_floor_imports_services(package: str) -> None:
    offenders = [
        f"{relative(path)} imports {module}"
        for path in (ROOT / package).rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] == TOP
    ]
    assert not offenders, "arrows point down: core <- roles <- services; " + "; ".join(offenders)


def test_the_ground_floor_imports_no_role() -> None:
    offenders = [
        f"{relative(path)} imports {module}"
        for path in (ROOT / "core").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in ROLES
    ]
    assert not offenders, "core/ stands on nothing of Tandem's: " + "; ".join(offenders)


def test_the_scan_would_catch_an_upward_import(tmp_path: Path) -> None:
    # The rules above pass vacuously if imported_modules misses a form; prove it sees each one.
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from services.cli import main\n    import learner.step\n")
    assert {"services.cli", "learner.step"} <= imported_modules(probe)


@pytest.mark.parametrize("library", sorted(LIBRARY_HOMES))
def test_heavy_libraries_live_in_their_one_home(library: str) -> None:
    homes = LIBRARY_HOMES[library]
    offenders = [
        f"{relative(path)} imports {module}"
        for path in source_files()
        for module in imported_modules(path)
        if module.split(".")[0] == library and not any(fnmatch(relative(path), home) for home in homes)
    ]
    assert not offenders, f"{library} may be imported only in {homes}: " + "; ".join(offenders)


def test_algorithms_import_only_torch() -> None:
    folder = ROOT / "learner" / "algorithms"
    assert (folder / "__init__.py").is_file()
    offenders = [
        f"{relative(path)} imports {module}"
        for path in folder.rglob("*.py")
        if path.name != "bandit.py"  # the figure script: matplotlib, imported lazily inside main()
        for module in imported_modules(path)
        if module.split(".")[0] not in ALGORITHMS_ALLOWED and not module.startswith("learner.algorithms")
    ]
    assert not offenders, "learner/algorithms is pure torch: " + "; ".join(offenders)


def test_nothing_unpickles_data_from_other_processes() -> None:
    offenders = [
        relative(path)
        for path in source_files()
        if {"pickle", "cloudpickle", "dill"} & {module.split(".")[0] for module in imported_modules(path)}
    ]
    assert not offenders, f"wire data is msgpack/safetensors, never pickle: {offenders}"
