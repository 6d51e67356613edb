"""`lewm_fast.kernels` imports from every way the tree can be run (issue 14, item 2).

The kernels live in the top-level `kernels/` folder; setup.py installs them as `lewm_fast.kernels`.
Each case runs in a fresh interpreter so its import system is the one being tested:
- a bare checkout on PYTHONPATH (how a GPU machine runs the tree): `python -S` keeps site-packages'
  .pth files (an editable install's finder among them) out, and torch/triton come in as plain paths;
- an editable install pointing at another checkout (a stale finder mapping `lewm_fast.kernels`
  elsewhere): the tree's own kernels must win;
- a wheel built from a copy of the tree (pure Python: LEWM_FAST_NO_NATIVE=1) and installed into a
  temporary target folder, imported from there.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SITE = str(Path(torch.__file__).resolve().parents[1])        # where torch and triton are installed

PROBE = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
import lewm_fast, lewm_fast.kernels as k
from lewm_fast.kernels import adaln_modulation, attention, mlp, norm_modulate, compile_check
from lewm_fast.planning.backends import TritonPredictor
TritonPredictor(lewm_fast.LeWM(lewm_fast.LeWMConfig.tiny()))     # the kernels' one user can be built
from lewm_fast.planner import kernels_status
ok, why = kernels_status()
print(k.__file__); print(attention.__file__); print(lewm_fast.__file__); print(ok, why)
"""


def _probe(cwd, pythonpath, *flags, prelude=""):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    out = subprocess.run([sys.executable, *flags, "-c", prelude + PROBE], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    kernels, attention, package, status = out.stdout.strip().splitlines()[-4:]
    assert status.startswith("True"), status
    return Path(kernels), Path(attention), Path(package)


def test_bare_checkout_on_pythonpath(tmp_path):
    kernels, attention, package = _probe(tmp_path, [str(ROOT), SITE], "-S")
    assert kernels == ROOT / "kernels" / "__init__.py" and attention == ROOT / "kernels" / "attention.py"
    assert package == ROOT / "lewm_fast" / "__init__.py"


STALE_FINDER = """
import importlib.abc, importlib.util, sys
class Stale(importlib.abc.MetaPathFinder):      # what setuptools' editable finder does for another checkout
    def find_spec(self, name, path=None, target=None):
        if name == "lewm_fast.kernels":
            return importlib.util.spec_from_file_location(name, {bogus!r}, submodule_search_locations=[{dir!r}])
sys.meta_path.append(Stale())
"""


def test_source_tree_wins_over_an_editable_mapping(tmp_path):
    bogus = tmp_path / "other_checkout" / "kernels"
    bogus.mkdir(parents=True)
    (bogus / "__init__.py").write_text("raise ImportError('the stale checkout was imported')\n")
    prelude = STALE_FINDER.format(bogus=str(bogus / "__init__.py"), dir=str(bogus))
    kernels, _, _ = _probe(tmp_path, [str(ROOT), SITE], "-S", prelude=prelude)
    assert kernels == ROOT / "kernels" / "__init__.py"


@pytest.mark.slow
def test_built_wheel_imports_its_kernels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "CMakeLists.txt"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for name in ("lewm_fast", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    env = dict(os.environ, LEWM_FAST_NO_NATIVE="1")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, env=env, cwd=tmp_path, timeout=600)
    wheels = list((tmp_path / "dist").glob("lewm_fast-*.whl"))
    assert len(wheels) == 1
    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheels[0])], check=True,
                   cwd=tmp_path, timeout=600)
    assert (target / "lewm_fast" / "kernels" / "attention.py").is_file()
    assert not (target / "kernels").exists()        # installed under lewm_fast only, no top-level package
    shutil.rmtree(src)                              # nothing may come from the source copy
    kernels, attention, package = _probe(tmp_path, [str(target), SITE], "-S")
    assert kernels == target / "lewm_fast" / "kernels" / "__init__.py"
    assert attention == target / "lewm_fast" / "kernels" / "attention.py"
    assert package == target / "lewm_fast" / "__init__.py"
