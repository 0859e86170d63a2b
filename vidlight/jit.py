"""The compiled CPU kernels' decorator (Numba).

A handful of per-pixel loops that numpy, OpenCV and torch would run as several passes over a
frame run as one compiled loop instead: SCI's network and its rounding into the output's
levels (:mod:`vidlight.models.sci_cpu`), the curve methods' preview renders
(:mod:`vidlight.models.curves_cpu`), the temporal stage's gain onto 8 bits
(:mod:`vidlight.pipeline.gain_cpu`) and the exposure preview's luma statistics
(:mod:`vidlight.pipeline.preview_cpu`). Modules that hold kernels are imported where they are
first needed, so a run that uses none does not load Numba.
"""

from __future__ import annotations

from numba import njit


def compiled(function):
    """``function`` compiled without the GIL, with numpy's error model (a division does not
    check for zero, so it vectorises). The machine code is cached on disk (in
    ``NUMBA_CACHE_DIR`` when set, else beside the package, else in the user's cache folder),
    so only the first run compiles it (a few seconds); where none is writable, every run
    compiles it.

    Numba's cache is keyed by the kernel's own source file, not by these options: after
    changing them here, clear the ``__pycache__`` folders of the kernels' modules."""
    try:
        return njit(nogil=True, error_model="numpy", cache=True)(function)
    except RuntimeError:  # no cache location
        return njit(nogil=True, error_model="numpy")(function)
