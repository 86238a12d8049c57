"""
The drop-in survives packaging: in a fresh virtual environment, after
C{pip install .} and after C{pip install -e .}, C{twist --help} and
C{twistd --help} list C{plugmgr}, and the C{plugmgr} console script runs.

How this is kept fast and still honest:

  - The virtual environment is fresh and isolated (no system site
    packages), but created C{--without-pip}: the pip of the interpreter
    running the tests installs into it with C{pip --python VENV/bin/python}
    (pip >= 22.3), which saves a few seconds of C{ensurepip} per venv.
  - One venv serves both tests. Twisted and its dependencies are installed
    into it once (the version the tests run with, so pip's cache or the
    configured find-links have it); each test then installs the project
    (its dependencies already satisfied), checks, and uninstalls it.
  - The project is installed from a copy of its packaging files in a
    temporary directory, so that the shared working tree gets no build/ or
    egg-info, and the editable install points at the copy.
  - Every command runs from a neutral directory without PYTHONPATH, so
    the repository is not on sys.path by accident.

It needs PyPI (or pip's cache) for Twisted and for setuptools in the
isolated build environment; it takes about 15 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 60


def _pip_supports_python_option() -> bool:
    try:
        import pip
    except ImportError:
        return False
    major, minor = (int(x) for x in pip.__version__.split(".")[:2])
    return (major, minor) >= (22, 3)


def _clean_env() -> dict:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PLUGMGR_CONTROL"):
        env.pop(name, None)
    return env


def _run(argv, cwd, timeout=RUN_TIMEOUT) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    return result


def _ignore(directory, names):
    return [n for n in names if n in ("__pycache__", "dropin.cache") or n.endswith(
        (".pyc", ".sock", ".lock", ".egg-info"))]


class Venv:
    """
    A fresh virtual environment and a pip that installs into it.
    """

    def __init__(self, root) -> None:
        self.root = root
        self.dir = root / "venv"
        self.neutral = root / "neutral"
        self.neutral.mkdir()
        with_pip = not _pip_supports_python_option()
        venv.EnvBuilder(with_pip=with_pip, system_site_packages=False, clear=True).create(
            str(self.dir))
        self.python = str(self.dir / "bin" / "python")
        if with_pip:
            self.pip = [self.python, "-m", "pip"]
        else:
            self.pip = [sys.executable, "-m", "pip", "--python", self.python]

    def bin(self, name) -> str:
        return str(self.dir / "bin" / name)

    def pip_run(self, *args) -> None:
        result = _run([*self.pip, *args, "--disable-pip-version-check"], cwd=self.neutral,
                      timeout=INSTALL_TIMEOUT)
        assert result.returncode == 0, (
            f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def run(self, *argv) -> subprocess.CompletedProcess:
        return _run(list(argv), cwd=self.neutral)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """
    A copy of the project's packaging files.
    """
    root = tmp_path_factory.mktemp("project") / "twisted-plugmgr"
    root.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py",
                 "MANIFEST.in"):
        if os.path.exists(os.path.join(REPO, name)):
            shutil.copy(os.path.join(REPO, name), root)
    for name in ("twisted_plugmgr", "twisted"):
        shutil.copytree(os.path.join(REPO, name), root / name, ignore=_ignore)
    return root


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """
    A fresh venv with Twisted (and its dependencies) installed.
    """
    import twisted

    environment = Venv(tmp_path_factory.mktemp("install"))
    environment.pip_run("install", "-q", f"twisted=={twisted.__version__}")
    return environment


def _source_packages(project) -> list:
    packages = []
    for directory, dirs, files in os.walk(project / "twisted_plugmgr"):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "__init__.py" in files:
            packages.append(os.path.relpath(directory, project).replace(os.sep, "."))
    return sorted(packages)


def _check_installed(env: Venv, project) -> None:
    for tool in ("twist", "twistd"):
        result = env.run(env.bin(tool), "--help")
        assert result.returncode == 0, result.stderr
        commands = [line.split()[0] for line in result.stdout.splitlines()
                    if line.startswith("    ") and line.split()]
        assert "plugmgr" in commands, f"{tool} --help does not list plugmgr:\n{result.stdout}"
    result = env.run(env.bin("twist"), "plugmgr", "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    result = env.run(env.bin("plugmgr"), "--help")
    assert result.returncode == 0, result.stderr
    assert "reload-changed" in result.stdout
    # Every package of the source is importable from the installed project.
    packages = _source_packages(project)
    result = env.run(env.python, "-c", "import importlib, sys\n"
                     "for name in sys.argv[1:]: importlib.import_module(name)", *packages)
    assert result.returncode == 0, f"cannot import all of {packages}:\n{result.stderr}"


def test_pip_install(fresh_venv, project):
    fresh_venv.pip_run("install", "-q", str(project))
    try:
        _check_installed(fresh_venv, project)
    finally:
        fresh_venv.pip_run("uninstall", "-y", "-q", "twisted-plugmgr")


def test_pip_install_editable(fresh_venv, project):
    fresh_venv.pip_run("install", "-q", "-e", str(project))
    try:
        _check_installed(fresh_venv, project)
    finally:
        fresh_venv.pip_run("uninstall", "-y", "-q", "twisted-plugmgr")
