"""The plugins ``osrbench new-plugin`` writes (a method, and a scorer with ``--scorer``) install
and pass their own tests in a fresh venv, by the commands their READMEs give (:func:`osrbench.scaffold.setup_commands`); the plugins in this
repository give one install section, the same in every README.

CI has no package index but PyPI and torch is large, so the fresh venv takes the third-party
packages (torch, numpy, pluggy, pytest, pip, setuptools, ...) from this interpreter's
site-packages: ``--system-site-packages`` would not do, since it exposes the base interpreter's
site-packages, not this (.venv) one's. The venv gets a ``.pth`` line that adds a mirror of those
directories: symlinks to every entry except osrbench's own (the host and the built-in plugins), so
the venv starts without osrbench and its dist-infos and must install the host and the plugin itself.
pip runs offline (``--no-index``): every dependency must already be satisfied, and
``--no-build-isolation --check-build-dependencies`` builds with the mirrored setuptools after
checking it meets the pyproject's ``setuptools>=77``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osrbench import scaffold
from osrbench.scorers import BUILTIN_SCORERS
from osrbench.testing import CHECKS
from osrbench.testing.scorers import SCORER_CHECKS

ROOT = Path(__file__).resolve().parents[1]
NAME = "fresh-osr"
SCORER = "fresh-score"
OFFLINE = ["--no-index", "--no-build-isolation", "--check-build-dependencies", "--quiet"]


def _mirror(dest: Path) -> None:
    """Symlink every entry of this interpreter's site-packages into ``dest``, osrbench's excepted."""
    dest.mkdir()
    for directory in dict.fromkeys(site.getsitepackages()):  # ordered, without duplicates
        for entry in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else ():
            if "osrbench" in entry.name.lower() or (dest / entry.name).exists():
                continue  # the host, the plugins and their editable finders; the first site dir wins
            (dest / entry.name).symlink_to(entry)


def _fresh_venv(where: Path, mirror: Path) -> Path:
    """A venv (without pip of its own: the mirror has it) that sees the mirror; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    # addsitedir (not a bare path) so the mirror's own .pth files (setuptools' distutils hook) apply.
    (Path(purelib) / "osrbench-test-mirror.pth").write_text(f"import site; site.addsitedir({str(mirror)!r})\n")
    return python


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _follow_readme(python: Path, root: Path, name: str, kind: str, env: dict[str, str]) -> list[str]:
    """Run the generated README's install and test commands in ``root``; their outputs."""
    readme = (root / "README.md").read_text()
    outputs = []
    for command, _ in scaffold.setup_commands(name, kind):
        assert command in readme, f"the generated README does not give {command!r}"
        argv = shlex.split(command)
        if argv[0] == "pip":  # offline, see the module docstring
            argv = ["python", "-m", "pip", argv[1], *OFFLINE, *argv[2:]]
        outputs.append(_run([str(python), *argv[1:]], root, env).stdout)
    # The mirror has pytest anyway: the extra itself must declare it, or a stranger's venv lacks it.
    requires = [str(python), "-c", f"import importlib.metadata as m; print(m.requires('osrbench-{name}'))"]
    assert "'pytest>=7; extra == \"test\"'" in _run(requires, root, env).stdout
    return outputs


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="venv layout and symlinks of a POSIX system")
def test_the_generated_plugins_pass_their_own_tests_in_a_fresh_venv(tmp_path):
    """A method plugin and a scorer plugin (``new-plugin --scorer``), in one venv: the host installs once."""
    t0 = time.perf_counter()
    root = scaffold.new_plugin(NAME, tmp_path, check_installed=False)
    scorer_root = scaffold.new_plugin(SCORER, tmp_path, check_installed=False, kind="scorer")
    mirror = tmp_path / "mirror"
    _mirror(mirror)
    python = _fresh_venv(tmp_path / "venv", mirror)
    # Nothing of this test's environment may leak in: no PYTHONPATH, no virtualenv, no plugin filter.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYTEST", "OSRBENCH_", "PIP_", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    probe = [str(python), "-c", "import importlib.util as u; print(u.find_spec('osrbench'))"]
    assert _run(probe, tmp_path, env).stdout.strip() == "None", "the fresh venv already sees osrbench"
    _run([str(python), "-m", "pip", "install", *OFFLINE, "-e", str(ROOT)], tmp_path, env)  # the host

    _, pytest_out, report = _follow_readme(python, root, NAME, "method", env)
    assert f"{len(CHECKS)} passed" in pytest_out, pytest_out[-2000:]
    assert "all checks passed" in report and all(f" {check} " in report for check in CHECKS), report
    _, pytest_out, report = _follow_readme(python, scorer_root, SCORER, "scorer", env)
    assert f"{len(SCORER_CHECKS)} passed" in pytest_out, pytest_out[-2000:]
    assert f"conformance of scorer {SCORER!r}" in report and "all checks passed" in report, report
    assert all(f" {check} " in report for check in SCORER_CHECKS), report
    # Installed through their entry points, beside the host only (no built-in plugin leaked in).
    listed = json.loads(_run([str(python.parent / "osrbench"), "plugins", "--json"], root, env).stdout)
    assert {p["name"]: (p["methods"], p["scorers"], p["error"]) for p in listed} == {
        NAME: ([NAME], [], None), SCORER: ([], [SCORER], None),
        "osrbench": ([], [s.name for s in BUILTIN_SCORERS], None)}
    print(f"fresh-venv scaffold test: {time.perf_counter() - t0:.0f} s")


# ----------------------------------------------------------- the repository's plugins: one install text

PLUGIN_DIRS = sorted(p.parent for pattern in ("plugins/*/pyproject.toml", "examples/*/pyproject.toml")
                     for p in ROOT.glob(pattern))


def test_every_plugin_readme_has_the_same_install_section():
    tomllib = pytest.importorskip("tomllib")
    assert PLUGIN_DIRS, "no plugin found under plugins/ or examples/"
    sections = {}
    for folder in PLUGIN_DIRS:
        rel = folder.relative_to(ROOT).as_posix()
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        (name,) = project["entry-points"]["osrbench"]
        assert any(r.startswith("pytest") for r in project.get("optional-dependencies", {}).get("test", [])), \
            f"{rel}/pyproject.toml has no test extra with pytest, which its README's [test] install promises"
        readme = (folder / "README.md").read_text()
        found = re.search(r"^## Install\n.*?(?=^## )", readme, re.S | re.M)
        assert found, f"{rel}/README.md has no '## Install' section"
        section = found.group(0)
        for command in (f"pip install -e {rel} ", f"pip install -e '{rel}[test]' ", f"python -m pytest {rel}/tests "):
            assert f"\n{command}" in section, f"{rel}/README.md does not give {command.strip()!r}"
        assert "--no-deps" not in readme and readme.count("--no-build-isolation") == 1, \
            f"{rel}/README.md: install advice outside its Install section"
        # The same words everywhere once the folder and the plugin name are taken out (and the padding).
        sections[rel] = re.sub(r" +#", " #", section.replace(rel, "FOLDER").replace(f'"{name}"', '"NAME"'))
    assert len(set(sections.values())) == 1, "the Install sections differ: " + ", ".join(sections)


def test_every_pyproject_has_todays_license_metadata(tmp_path):
    """An SPDX ``license`` string (a TOML table is deprecated by setuptools) and the setuptools that
    reads it (>= 77), in the host, every plugin and the scaffold's template."""
    tomllib = pytest.importorskip("tomllib")
    generated = scaffold.new_plugin("spdx-check", tmp_path, check_installed=False) / "pyproject.toml"
    for path in [ROOT / "pyproject.toml", *(d / "pyproject.toml" for d in PLUGIN_DIRS), generated]:
        doc = tomllib.loads(path.read_text())
        assert isinstance(doc["project"].get("license"), str), f"{path}: license is not an SPDX string"
        assert doc["build-system"]["requires"] == ["setuptools>=77"], f"{path}: SPDX strings need setuptools>=77"
