"""REST routes of the dicom_net plugin (not built yet)."""
from __future__ import annotations


def routes(ctx):
    """The routes of this module (none yet)."""
    return []
