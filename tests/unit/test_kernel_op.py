"""The kernels' custom ops: called directly when eager (no torch._dynamo import on a first call, which would land
in a server's start-up), through the registered op under torch.compile."""

import subprocess
import sys
import textwrap

import torch

from cadence.layers.kernel_op import kernel_op

FAKE_CALLS = []


@kernel_op("test_twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x):
    FAKE_CALLS.append(tuple(x.shape))
    return torch.empty_like(x)


def test_an_eager_call_runs_the_function_and_imports_no_compiler():
    code = textwrap.dedent("""
        import sys, torch
        from cadence.layers.kernel_op import kernel_op

        @kernel_op("probe_twice", mutates_args=())
        def twice(x: torch.Tensor) -> torch.Tensor:
            return x * 2

        assert twice(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
        print("torch._dynamo" in sys.modules, "sympy" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_under_torch_compile_the_registered_op_is_traced():
    FAKE_CALLS.clear()
    x = torch.arange(4.0)
    assert torch.equal(_twice(x), x * 2) and FAKE_CALLS == []  # eager: the function itself
    compiled = torch.compile(lambda t: _twice(t) + 1, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x), x * 2 + 1)
    assert FAKE_CALLS  # traced through the op's fake: the compiler saw one opaque call
