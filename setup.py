"""The package's C extension; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "clovisor._spanwire",
            ["clovisor/spanwire.c"],
            depends=["clovisor/bpf/exchange.h"],
            extra_compile_args=["-Wextra"],
        )
    ]
)
