"""Every lab script imports: they run only on the GPU machine or by hand, so a renamed helper breaks them
silently otherwise (tune.py imported a `check_fused` that had become `check_kernel`)."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in ROOT.glob("experiments/*/lab/*.py")
    if p.name != "__init__.py"
)


def test_the_lab_scripts_are_found():
    assert "experiments.efficiency.lab.tune" in LAB_MODULES and len(LAB_MODULES) > 10


@pytest.mark.parametrize("module", LAB_MODULES)
def test_lab_script_imports(module):
    assert importlib.import_module(module).__name__ == module
