"""The optional C extension (everything else is in pyproject.toml). Without a compiler the
build goes on without it and gitmodel uses numpy for the same loops (docs/design.md)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gitmodel.store._planes", ["gitmodel/store/_planes.c"],
                             extra_compile_args=["-O3"], optional=True)])
