"""pyproject.toml: the same pins as requirements*.txt (they cannot drift), torch pinned, the console scripts real,
every rag package shipped; and ``pip install -e .`` for real, into a fresh venv, used from outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# requirements file -> the pyproject lists that must hold exactly its pins
MIRRORS = {
    "requirements.txt": ("dependencies", "space"),
    "requirements-build.txt": ("build",),
    "requirements-dev.txt": ("test",),
}


def _pin(requirement: Requirement) -> tuple[str, tuple[str, ...], str, str]:
    """What must agree: the package, its extras, the version specifier and the environment marker."""
    return (canonicalize_name(requirement.name), tuple(sorted(requirement.extras)), str(requirement.specifier),
            str(requirement.marker or ""))


def requirements_file(name: str) -> dict[str, tuple]:
    """The pins of one requirements file (comments, blank lines and inline comments dropped)."""
    pins = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            assert not line.startswith("-"), f"{name}: options such as {line!r} cannot be mirrored in pyproject.toml"
            pin = _pin(Requirement(line))
            assert pin[0] not in pins, f"{name} lists {pin[0]} twice"
            pins[pin[0]] = pin
    return pins


def pyproject_lists(*names: str) -> dict[str, tuple]:
    pins: dict[str, tuple] = {}
    for list_name in names:
        entries = PROJECT["dependencies"] if list_name == "dependencies" else PROJECT["optional-dependencies"][list_name]
        for entry in entries:
            pin = _pin(Requirement(entry))
            assert pin[0] not in pins, f"pyproject.toml lists {pin[0]} twice ({', '.join(names)})"
            pins[pin[0]] = pin
    return pins


@pytest.mark.parametrize("name", list(MIRRORS))
def test_requirements_files_and_pyproject_hold_the_same_pins(name):
    in_file, in_pyproject = requirements_file(name), pyproject_lists(*MIRRORS[name])
    assert in_file == in_pyproject, (
        f"{name} and pyproject.toml {' + '.join(MIRRORS[name])} differ: only in {name}: "
        f"{sorted(set(in_file.items()) - set(in_pyproject.items()))}; only in pyproject.toml: "
        f"{sorted(set(in_pyproject.items()) - set(in_file.items()))}"
    )


def test_every_extra_is_mirrored_and_every_pin_is_exact():
    assert set(PROJECT["optional-dependencies"]) == {"space", "build", "test"}
    everything = [*PROJECT["dependencies"], *(e for extra in PROJECT["optional-dependencies"].values() for e in extra)]
    loose = [e for e in everything if not str(Requirement(e).specifier).startswith("==")]
    assert not loose, f"not pinned to one version: {loose}"
    # torch in the base dependencies, pinned: an install never resolves a torch of its own (a multi-GB CUDA build)
    assert "torch==2.13.0" in PROJECT["dependencies"]
    assert "gradio" not in {canonicalize_name(Requirement(e).name) for e in PROJECT["dependencies"]}  # rag needs no UI


def test_console_scripts_name_real_commands():
    import importlib

    assert set(PROJECT["scripts"]) == {"rag-build", "rag-evaluate"}
    for target in PROJECT["scripts"].values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_package_ships_every_rag_package_and_nothing_else():
    found = set(find_packages(str(ROOT), **PYPROJECT["tool"]["setuptools"]["packages"]["find"]))
    folders = [ROOT / "rag", *(p for p in (ROOT / "rag").rglob("*") if p.is_dir() and p.name != "__pycache__")]
    with_code = {".".join(p.relative_to(ROOT).parts) for p in folders if any(p.glob("*.py"))}
    assert found == with_code, f"folders of rag/ with code but no __init__.py are left out: {with_code - found}"
    assert not {name.split(".")[0] for name in found} - {"rag"}


# -- pip install, for real ------------------------------------------------------------------------------


def _copy_project(target: Path) -> Path:
    """What the sdist holds (pyproject.toml, the readme it names, rag/), outside the checkout: builds write
    build/ and *.egg-info next to pyproject.toml, and the checkout stays clean."""
    target.mkdir()
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    readme = PROJECT["readme"]
    (target / readme).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / readme, target / readme)
    shutil.copytree(ROOT / "rag", target / "rag", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _fresh_venv(folder: Path) -> Path:
    """A new venv without pip whose site-packages also sees this venv's (the pinned dependencies, pip and
    setuptools): installs with --no-deps --no-build-isolation need no network."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.mark.slow
def test_pip_install_editable_then_use_it_from_outside_the_checkout(tmp_path):
    source = _copy_project(tmp_path / "src")
    python = _fresh_venv(tmp_path / "venv")
    env = _clean_env()
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(source)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    elsewhere = tmp_path / "notebook"
    elsewhere.mkdir()
    code = "import rag; print(rag.__file__); print(rag.open.__name__, rag.score.__name__, rag.InvalidInput.__name__)"
    used = subprocess.run([python, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=120)
    assert used.returncode == 0, used.stderr[-3000:]
    assert used.stdout.split() == [str(source / "rag" / "__init__.py"), "open", "score", "InvalidInput"]
    bin_dir = python.parent
    build_help = subprocess.run([bin_dir / "rag-build", "--help"], cwd=elsewhere, capture_output=True, text=True,
                                env=env, timeout=300)
    assert build_help.returncode == 0, build_help.stderr[-3000:]
    assert build_help.stdout.startswith("usage: rag-build") and "rag-build --images photos/" in build_help.stdout
    evaluate_help = subprocess.run([bin_dir / "rag-evaluate", "--help"], cwd=elsewhere, capture_output=True,
                                   text=True, env=env, timeout=300)
    assert evaluate_help.returncode == 0 and "--collection" in evaluate_help.stdout, evaluate_help.stderr[-3000:]
    refused = subprocess.run([bin_dir / "rag-build", "--images", "x"], cwd=elsewhere, capture_output=True, text=True,
                             env=env, timeout=300)
    assert refused.returncode == 2 and "--out DIR is required to build" in refused.stderr


@pytest.mark.slow
def test_the_wheel_holds_the_library_its_commands_and_its_pins(tmp_path):
    source = _copy_project(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, env=_clean_env(),
                           timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    assert modules == {p.relative_to(source).as_posix() for p in (source / "rag").rglob("*.py")}
    meta = {n.rsplit("/", 1)[1]: zipfile.ZipFile(wheel).read(n).decode() for n in names if ".dist-info/" in n}
    assert "rag-build = rag.ingest.cli:main" in meta["entry_points.txt"]
    assert "rag-evaluate = rag.evaluate.cli:main" in meta["entry_points.txt"]
    requires = [line.split(": ", 1)[1] for line in meta["METADATA"].splitlines() if line.startswith("Requires-Dist: ")]
    assert "torch==2.13.0" in requires and 'gradio[mcp,oauth]==6.31.0; extra == "space"' in requires
