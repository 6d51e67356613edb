"""Build for lewm_fast: pure-Python package + Triton kernels + a pybind11 extension built by CMake.

`kernels/` is installed as the subpackage `lewm_fast.kernels`; `csrc/` is compiled through the
top-level CMakeLists.txt into `lewm_fast._native`. LEWM_FAST_NO_NATIVE=1 leaves the extension out (a
pure-Python wheel: what tests/test_install.py builds to check the packaging in seconds). From a bare
checkout on PYTHONPATH lewm_fast/__init__.py binds `lewm_fast.kernels` to `kernels/` itself.
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        cfg = "Debug" if self.debug else "Release"
        configure = [
            "cmake", str(ROOT),
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
        ]
        subprocess.check_call(configure, cwd=build_dir)
        jobs = str(os.cpu_count() or 2)
        subprocess.check_call(["cmake", "--build", ".", "--config", cfg, "-j", jobs], cwd=build_dir)


def version() -> str:
    for line in (ROOT / "lewm_fast" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("no __version__ in lewm_fast/__init__.py")


# mujoco / dm_control / ogbench are pinned together: that pairing is what breaks on upgrades
ENVS = ["gymnasium>=1.0", "pymunk>=7", "mujoco==4.0.0", "dm_control==1.0.50", "ogbench==1.2.2"]
DEV = [
    "pytest>=8", "pytest-benchmark>=4", "pytest-timeout>=2",
    "matplotlib>=3.7", "scipy>=1.10", "hdf5plugin>=4",
]

setup(
    name="lewm_fast",
    version=version(),
    description="Fast training and CEM planning for LeWorldModel (LeWM)",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lewm_fast", "lewm_fast.*"]) + ["lewm_fast.kernels"],
    package_dir={"lewm_fast.kernels": "kernels"},
    package_data={"lewm_fast": ["pretrained/*.safetensors", "pretrained/*.json", "pretrained/*.md"]},
    ext_modules=[] if os.environ.get("LEWM_FAST_NO_NATIVE") == "1" else [CMakeExtension("lewm_fast._native")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "h5py>=3.8",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scipy>=1.10",
    ],
    extras_require={
        "triton": ["triton>=3.0"],
        "envs": ENVS,
        "dev": DEV + ENVS + ["triton>=3.0"],
        "blosc": ["hdf5plugin>=4"],
    },
    zip_safe=False,
)
