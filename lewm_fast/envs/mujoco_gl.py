"""Choose a headless OpenGL backend for MuJoCo *before* `mujoco` is imported.

MuJoCo's Python package reads `MUJOCO_GL` once, when `import mujoco` runs, and PyOpenGL fixes its
platform (`PYOPENGL_PLATFORM`) on first import as well; neither can be switched later in the same
process. So the MuJoCo envs call `select_gl_backend()` at the top of their modules, before they
import mujoco.

Order: an existing `MUJOCO_GL` is respected as is; otherwise EGL (Mesa's llvmpipe renders on the CPU
without a display), then OSMesa. Each candidate is tried in a short-lived child interpreter that
renders one tiny frame: a loadable libEGL does not prove that an EGL vendor driver is installed.
The winner is written to `os.environ`, so worker processes inherit it and never probe again.
"""
from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import warnings
from typing import Callable, Mapping

# Debian 12 packages that provide each backend on a machine without a GPU or a display.
_APT_PACKAGES = {
    "egl": "libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
}
_LIBRARY_NAMES = {"egl": "EGL", "osmesa": "OSMesa"}

_PROBE_SCRIPT = (
    "import mujoco\n"
    "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos=\"0 0 1\"/>"
    "<geom type=\"sphere\" size=\".1\"/></worldbody></mujoco>')\n"
    "d = mujoco.MjData(m)\n"
    "mujoco.mj_forward(m, d)\n"
    "with mujoco.Renderer(m, 16, 16) as r:\n"
    "    r.update_scene(d)\n"
    "    assert r.render().any(), 'blank frame'\n"
)


def _library_available(backend: str) -> bool:
    return ctypes.util.find_library(_LIBRARY_NAMES[backend]) is not None


def _renders_in_child(backend: str) -> tuple[bool, str]:
    """Render a 16x16 frame in a fresh interpreter with MUJOCO_GL=backend; (ok, error text)."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "probe timed out after 120 s"
    lines = done.stderr.strip().splitlines()
    return done.returncode == 0, (lines[-1] if lines else f"exit code {done.returncode}")


def choose_backend(environ: Mapping[str, str],
                   library_available: Callable[[str], bool] = _library_available,
                   renders: Callable[[str], tuple[bool, str]] = _renders_in_child) -> str:
    """Return the MUJOCO_GL value to use; raise RuntimeError naming the missing packages."""
    preset = environ.get("MUJOCO_GL", "").strip()
    if preset:
        return preset
    # A PYOPENGL_PLATFORM set by the user pins PyOpenGL; only the matching backend can work.
    pinned = environ.get("PYOPENGL_PLATFORM", "").strip().lower()
    candidates = [pinned] if pinned in _APT_PACKAGES else ["egl", "osmesa"]
    failures = []
    for backend in candidates:
        if not library_available(backend):
            failures.append(f"{backend}: lib{_LIBRARY_NAMES[backend]} not found")
            continue
        ok, error = renders(backend)
        if ok:
            return backend
        failures.append(f"{backend}: {error}")
    packages = " or ".join(f"`apt-get install {_APT_PACKAGES[b]}`" for b in candidates)
    raise RuntimeError(
        "No headless OpenGL backend works for MuJoCo rendering (" + "; ".join(failures) + "). "
        f"On Debian/Ubuntu install {packages}, or set MUJOCO_GL yourself.")


def _preload_triton() -> None:
    """Load Triton (when installed) before any GL context exists: importing it after Mesa's llvmpipe has
    loaded its own LLVM segfaulted here (render a Cube/Reacher frame, then use the Triton kernels)."""
    try:
        import triton  # noqa: F401
    except Exception:  # not installed, or unusable here: nothing to protect
        pass


def select_gl_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM) in os.environ if unset; return the backend in use."""
    _preload_triton()
    preset = os.environ.get("MUJOCO_GL", "").strip()
    if preset:
        return preset
    if "mujoco" in sys.modules:
        # Too late to choose: mujoco has already picked its default (GLFW, which needs a display).
        warnings.warn("mujoco was imported before lewm_fast.envs.mujoco_gl could choose a headless "
                      "backend; set MUJOCO_GL=egl (or osmesa) or import lewm_fast.envs first.",
                      RuntimeWarning, stacklevel=2)
        return ""
    backend = choose_backend(os.environ)
    os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend
