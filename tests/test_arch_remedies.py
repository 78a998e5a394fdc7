"""Architecture strings for batch norm, residual blocks, repeats and padding "same"; Conv2d(padding="same")."""
import numpy as np
import pytest

import deepscope
from deepscope import arch, nn
from deepscope.errors import ArchitectureError
from deepscope.gradcheck import check_module

try:
    import torch
except ImportError:  # the finite-difference checks run without torch; the parity test skips
    torch = None


def test_batchnorm_repeat_and_residual_tokens_build_the_layers_they_name():
    m = arch.build("784-100bn*3-10:sigmoid")
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Flatten"] + ["Linear", "BatchNorm1d", "Sigmoid"] * 3 + ["Linear"]
    r = arch.build("784-50-res50bn*2-10:relu")
    assert [type(x).__name__ for x in r] == ["Flatten", "Linear", "ReLU", "Residual", "ReLU", "Residual", "ReLU",
                                             "Linear"]
    block = [type(x).__name__ for x in r[3].block]
    assert block == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"] and r[3].shortcut is None
    c = arch.build("conv4x3samebn-res8x3-maxpool2-fc10", input_shape=(1, 8, 8))
    assert c[0].padding == (1, 1) and isinstance(c[1], nn.BatchNorm2d)
    assert isinstance(c[3].shortcut, nn.Conv2d) and c[3].shortcut.kernel_size == (1, 1)   # 4 -> 8 channels
    assert c(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)


def test_residual_conv_net_gradcheck():
    deepscope.manual_seed(0)
    m = arch.build("conv3x3samebn-res3x3bn-fc4:tanh", input_shape=(1, 5, 5))
    check_module(m, np.random.default_rng(0).standard_normal((3, 1, 5, 5)), max_entries=20)


@pytest.mark.parametrize("bad,msg", [("784bn-10", "bn follows a hidden layer"),
                                     ("784-100-res50-10", "needs an input of 50 features"),
                                     ("784-100*0-10", "repeat count"),
                                     ("conv8x4same-fc10", "odd kernel"),
                                     ("784-10bn", "must end with an output layer"),
                                     ("784-100-res100x3-10", "image input")])
def test_bad_strings_name_the_token(bad, msg):
    with pytest.raises(ArchitectureError, match=msg):
        arch.build(bad)


def test_conv_padding_same_keeps_the_size_and_matches_pytorch():
    deepscope.manual_seed(0)
    conv = nn.Conv2d(2, 3, 5, padding="same").to("float64")
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6))
    assert conv(x).shape == (2, 3, 7, 6)
    check_module(conv, x, max_entries=40)
    assert nn.Conv2d(2, 3, 3, padding="valid").padding == (0, 0)
    with pytest.raises(ValueError, match="odd kernel"):
        nn.Conv2d(2, 3, 4, padding="same")
    with pytest.raises(ValueError, match="stride 1"):
        nn.Conv2d(2, 3, 3, stride=2, padding="same")
    if torch is not None:
        theirs = torch.nn.Conv2d(2, 3, 5, padding="same").double()
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
        np.testing.assert_allclose(conv(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
