"""Shared test setup. TRITON_INTERPRET must be set before any Triton kernel is defined, so it is set
here, at the top of the first conftest pytest imports, whenever CUDA is absent."""
import os

try:
    import torch
    _cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Evaluation CLIs keep freed memory by default (lewm_fast/planning/allocator.py), process-wide and for good.
# Tests call those mains in this process: opt out here so later tests (the CI speed report above all) time
# the allocator a library user gets. Tests of the default run a subprocess without this variable.
os.environ.setdefault("LEWM_FAST_KEEP_FREED_MEMORY", "0")

import pytest  # noqa: E402


@pytest.fixture
def reference():
    """The stable-worldmodel 0.1.1 package, or a skip saying why it cannot be imported."""
    from reference_compat import REFERENCE_ERROR, import_reference

    swm = import_reference()
    if swm is None:
        pytest.skip(REFERENCE_ERROR)
    return swm


@pytest.fixture
def one_thread():
    """Run a test single-threaded: on the shared 2-core test machines OpenMP barriers between busy
    threads make small ops up to 100x slower. Use with pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
