"""Architecture strings: bad sizes are one ArchitectureError line."""
import pytest

import deepscope as ds
from deepscope import arch


@pytest.mark.parametrize("bad", ["784-0-10", "0-10", "conv0x5-10", "conv20x5s0-10", "conv20x0-10",
                                 "conv20x5-maxpool0-10", "conv20x5-maxpool2s0-10", "784-fc0-10"])
def test_architecture_with_zero_sizes_is_an_architecture_error(bad):
    with pytest.raises(ds.ArchitectureError, match=r"must be at least 1"):
        arch.build(bad)
