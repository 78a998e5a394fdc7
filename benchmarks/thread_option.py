"""``--threads N`` read from the command line before NumPy is imported (OpenBLAS reads its thread count then).
Kept free of NumPy so that a benchmark can import it first."""
from __future__ import annotations


def threads_from_argv(argv, default: int) -> int:
    """The value of ``--threads N`` / ``--threads=N`` in ``argv``, else ``default``."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default
