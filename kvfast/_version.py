"""The version of kvfast, written here only: the package metadata (pyproject.toml),
``kvfast.__version__`` and the version the server reports (RESP ``INFO``) read it.

Kept free of imports so that setuptools can read it without importing kvfast.
"""
__version__ = "0.1.0"
