"""The ``hwnas`` command: parse, call the layers below, print, exit. Nothing in hwnas imports it."""
from hwnas.cli.app import app, main

__all__ = ["app", "main"]
