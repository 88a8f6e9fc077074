"""pylog: Apache Kafka's architecture as a Python package with Cython hot paths."""

try:
    from pylog import _core  # noqa: F401
except ImportError as exc:  # no silent pure-Python fallback
    raise ImportError(
        "pylog's compiled extension pylog._core failed to import "
        f"({exc}). pylog needs it: build it with `pip install -e .` (a C compiler and "
        "Python headers are needed), or install a wheel for this platform."
    ) from exc

from pylog.errors import PylogError

__version__ = "0.1.0"
__all__ = ["PylogError", "__version__"]
