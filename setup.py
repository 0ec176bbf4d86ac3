"""Builds abcjax's compiled CPU kernels (abcjax/csrc; see abcjax/cpu_kernels.py); the rest of the
package is pure Python, described in pyproject.toml.

The kernels are optional: where they do not compile (no C++ compiler, or one without GCC's vector
builtins, such as Clang) the install still succeeds, and abcjax runs the same arithmetic in XLA's
own kernels.
"""

from setuptools import Extension, setup

# -Wno-*: warnings from XLA's headers, and GCC's note that vector types change the ABI of inline helpers.
COMPILE_ARGS = ["-O3", "-std=c++17", "-Wno-psabi", "-Wno-attributes", "-Wno-return-type"]

setup(
    ext_modules=[
        Extension(
            "abcjax._lstm_cpu_kernels",
            sources=["abcjax/csrc/lstm_cpu_kernels.cc"],
            include_dirs=["abcjax/csrc/third_party"],
            language="c++",
            extra_compile_args=COMPILE_ARGS,
            optional=True,
        )
    ]
)
