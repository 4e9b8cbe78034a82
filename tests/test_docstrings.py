"""The examples in docstrings run (doctest): every module whose docstrings hold `>>>` examples is listed here, and a
module with examples that is missing from the list fails the last test."""

import doctest
import importlib
from pathlib import Path

import pytest

import tfspeed

ROOT = Path(tfspeed.__file__).parent
MODULES = sorted(
    ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in ROOT.rglob("*.py") if ">>>" in p.read_text())


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
    assert result.attempted > 0


def test_some_modules_have_runnable_examples():
    assert {"tfspeed.config", "tfspeed.stages.base", "tfspeed.compress.pruning.config"} <= set(MODULES)
