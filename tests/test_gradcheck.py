"""deepscope.gradcheck, the one finite-difference checker: any memory layout, modules without an input
gradient, and it still catches a wrong gradient."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import nn
from deepscope.gradcheck import check_module


def test_gradcheck_handles_non_contiguous_inputs():
    ds.manual_seed(0)
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((4, 3)))
    check_module(nn.Linear(3, 2), x)


def test_gradcheck_handles_modules_without_an_input_gradient():
    ds.manual_seed(0)
    layer = nn.Linear(3, 2)
    layer.needs_input_grad = False
    grads = check_module(layer, np.random.default_rng(0).standard_normal((4, 3)))
    assert grads["input"] is None
    check_module(nn.Embedding(5, 3), np.array([[0, 1, 1], [4, 0, 2]]))


def test_gradcheck_still_catches_a_wrong_parameter_gradient():
    class Wrong(nn.Linear):
        def backward(self, grad_output):
            out = super().backward(grad_output)
            self.weight.grad *= 1.01
            return out
    with pytest.raises(AssertionError, match="gradient of weight"):
        check_module(Wrong(3, 2), np.asfortranarray(np.random.default_rng(0).standard_normal((4, 3))))
