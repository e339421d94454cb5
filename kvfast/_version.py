"""The package version: written here once (pyproject.toml and INFO read it)."""
__version__ = "0.1.0"
