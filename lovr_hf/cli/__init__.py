"""The ``lovr`` command line: argument parsing and printing only; the work lives in the layers below.

``lovr_hf.cli:main`` is the console script's entry point (the same string since 0.1.0, so a ``lovr`` script
installed by an older lovr_hf keeps working); :mod:`lovr_hf.cli.app` holds it, one module per command beside it.
"""

from lovr_hf.cli.app import main

__all__ = ["main"]
