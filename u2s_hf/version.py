"""The package version (setup.cfg reads it; the package root re-exports it)."""

__version__ = "0.1.0"
