"""REST routes of the dicom_net plugin (not built yet)."""
from __future__ import annotations


def routes(ctx):
    """The routes of this module (none yet)."""
    return []


def start(ctx):
    """Nothing to start yet."""


def stop(ctx):
    """Nothing to stop yet."""
