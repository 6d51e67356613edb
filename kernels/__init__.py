"""Triton kernels for lewm_fast, installed as `lewm_fast.kernels`.

One kernel per file, each with its PyTorch reference function (`*_ref`). Importing this package
never requires Triton; each kernel module raises a clear ImportError when Triton is missing.
"""
