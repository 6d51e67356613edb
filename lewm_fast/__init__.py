"""lewm_fast: fast training and CEM planning for LeWorldModel (LeWM)."""
__version__ = "0.1.0"

from .model import LeWM, LeWMConfig  # noqa: E402

__all__ = ["LeWM", "LeWMConfig", "Planner", "__version__"]


def __getattr__(name):
    # Planner pulls in the planning stack (and Triton when present): import it on first use.
    if name == "Planner":
        from .planner import Planner
        return Planner
    raise AttributeError(f"module 'lewm_fast' has no attribute {name!r}")
