"""The one thing pyproject.toml cannot say yet (setuptools calls its ext-modules table
experimental): the order book's per-level update in C, oraculo_trio/core/_book_levels.c.

It is optional: without a C compiler the install still succeeds, and the service runs the
same loop in Python (a fifth more CPU on a diff-book feed) and says so at start-up.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "oraculo_trio.core._book_levels",
            sources=["oraculo_trio/core/_book_levels.c"],
            optional=True,
        )
    ]
)
