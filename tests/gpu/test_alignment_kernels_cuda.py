"""The end-of-speech rules' Triton kernels compiled on CUDA (skipped without it): the same checks the CPU tests run
through Triton's interpreter, here with the GPU's own argmax tie-breaking and bf16 keys."""

import pytest
import torch

from tests.conftest import run_kernel_check
from tests.unit.test_alignment_kernels import RULES_CHECK, TEXT_ATTENTION_CHECK

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_text_attention_kernel_on_cuda():
    run_kernel_check(TEXT_ATTENTION_CHECK, "cuda")


def test_rules_kernel_on_cuda():
    run_kernel_check(RULES_CHECK, "cuda")
