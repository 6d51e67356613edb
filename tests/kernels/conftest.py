"""Kernel tests run on the GPU when there is one, else in Triton's CPU interpreter.

TRITON_INTERPRET must be set before any kernel module is imported (@triton.jit reads it when the kernel
is defined), and this conftest is loaded before the test modules of this folder are collected.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _exact_fp32_reference():
    """Torch references in fp32 must not use TF32 on the GPU, or they would be the inexact side."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
