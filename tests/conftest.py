"""Shared test set-up.

TRITON_INTERPRET must be set before any @triton.jit decorator runs, so it is set here, at
import time of the test session, whenever no CUDA device is present: the Triton backend then
runs its kernels on CPU tensors in the interpreter.
"""
import os
import random

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def generator(request):
    """A torch.Generator with a fresh random seed; the seed is reported if the test fails."""
    seed = random.SystemRandom().randrange(2**31)
    request.node.user_properties.append(("seed", seed))
    return torch.Generator().manual_seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            report.sections.append(("random seed", f"seed = {seeds[0]}"))
