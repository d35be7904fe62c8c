"""The version of provision: written once, here (the package metadata and `provision --version` read it)."""

__version__ = "0.2.0"
