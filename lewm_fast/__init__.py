"""lewm_fast: fast training and CEM planning for LeWorldModel (LeWM)."""
__version__ = "0.1.0"

import importlib.util as _ilu  # noqa: E402
import sys as _sys  # noqa: E402
from pathlib import Path as _Path  # noqa: E402


def _bind_source_kernels() -> None:
    """Make `lewm_fast.kernels` the top-level `kernels/` folder of *this* source tree.

    A wheel installs `kernels/` as the real subpackage `lewm_fast/kernels/` (setup.py's package_dir),
    so there is nothing to do. A source tree on PYTHONPATH has no such subfolder, and an editable
    install maps the name to whichever checkout was installed (possibly another one): binding the
    module spec here, before any `import lewm_fast.kernels`, makes both import the kernels that sit
    beside this `lewm_fast/`. Cheap: kernels/__init__.py imports nothing (Triton loads per kernel)."""
    here = _Path(__file__).resolve().parent
    if (here / "kernels" / "__init__.py").is_file() or "lewm_fast.kernels" in _sys.modules:
        return                                   # wheel layout, or already bound
    src = here.parent / "kernels" / "__init__.py"
    if not (src.is_file() and (here.parent / "setup.py").is_file()):
        return                                   # not a source tree: leave it to the import system
    spec = _ilu.spec_from_file_location("lewm_fast.kernels", src, submodule_search_locations=[str(src.parent)])
    module = _ilu.module_from_spec(spec)
    _sys.modules["lewm_fast.kernels"] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module                # what `import lewm_fast.kernels` binds on the parent


_bind_source_kernels()

from .model import LeWM, LeWMConfig  # noqa: E402

__all__ = ["LeWM", "LeWMConfig", "Planner", "__version__"]


def __getattr__(name):
    # Planner pulls in the planning stack (and Triton when present): import it on first use.
    if name == "Planner":
        from .planner import Planner
        return Planner
    raise AttributeError(f"module 'lewm_fast' has no attribute {name!r}")
