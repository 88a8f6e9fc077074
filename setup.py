"""Build of pylog's Cython extension.

``PYLOG_DEBUG=1 pip install -e .`` builds a debug extension: ``-O0 -g``, Cython
line tracing (so coverage and profilers see .pyx lines), bounds checks on, and
annotated HTML next to each .pyx file.
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("PYLOG_DEBUG", "") not in ("", "0")

directives = {
    "language_level": "3",
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    directives.update(linetrace=True, profile=True)
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    compile_args = ["-O0", "-g3", "-UNDEBUG"]
elif sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O3", "-fno-strict-aliasing"]

extensions = [
    Extension(
        "pylog._core",
        ["src/pylog/_core.pyx"],
        include_dirs=[numpy.get_include(), "src/pylog"],
        define_macros=macros,
        extra_compile_args=compile_args,
        depends=[
            "src/pylog/_core.pxd",
            "src/pylog/_crc32c.h",
        ]
        + [os.path.join("src/pylog", f) for f in sorted(os.listdir("src/pylog")) if f.endswith(".pxi")],
    ),
    Extension(
        "pylog._protocol",
        ["src/pylog/_protocol.pyx"],
        define_macros=macros,
        extra_compile_args=compile_args,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=DEBUG,
        include_path=["src/pylog"],
    ),
)
