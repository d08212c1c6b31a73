"""The sampling filters' Triton kernel compiled on CUDA (skipped without it): the same check the CPU tests run
through Triton's interpreter, against the eager filters on the CPU."""

import pytest
import torch

from tests.conftest import run_kernel_check
from tests.unit.test_sampling_kernel import FILTER_CHECK

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_filter_kernel_on_cuda():
    run_kernel_check(FILTER_CHECK, "cuda")
