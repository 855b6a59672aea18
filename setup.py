"""Only the C extension lives here; all other metadata is in pyproject.toml.

The extension is optional: where it cannot be compiled, diskaudit walks with os.scandir instead
(about half as fast; see docs/adr/0002).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "diskaudit.scan._fastwalk",
            sources=["src/diskaudit/scan/_fastwalk.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
            optional=True,
        )
    ]
)
