"""Builds abcjax's compiled CPU kernels (abcjax/csrc; see abcjax/cpu_kernels.py); the rest of the
package is pure Python, described in pyproject.toml.

The kernels are optional: where they do not compile (no C++ compiler, or one without GCC's vector
builtins, such as Clang) the install still succeeds, and abcjax runs the same arithmetic in XLA's
own kernels.

The library records the SHA-256 of the source it was built from: an editable install does not
rebuild when the source changes (a `git pull`), and abcjax/cpu_kernels.py uses XLA's kernels, with a
warning, rather than a library built from other source.
"""

import hashlib
import pathlib

from setuptools import Extension, setup

SOURCE = "abcjax/csrc/lstm_cpu_kernels.cc"
SOURCE_SHA256 = hashlib.sha256((pathlib.Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

# -Wno-*: warnings from XLA's headers, and GCC's note that vector types change the ABI of inline helpers.
COMPILE_ARGS = ["-O3", "-std=c++17", "-Wno-psabi", "-Wno-attributes", "-Wno-return-type"]

setup(
    ext_modules=[
        Extension(
            "abcjax._lstm_cpu_kernels",
            sources=[SOURCE],
            include_dirs=["abcjax/csrc/third_party"],
            define_macros=[("ABCJAX_KERNELS_SOURCE_SHA256", f'"{SOURCE_SHA256}"')],
            language="c++",
            extra_compile_args=COMPILE_ARGS,
            optional=True,
        )
    ]
)
