"""Not built yet."""
from __future__ import annotations


def check_config(config):
    """Check this module's options (none yet)."""


def routes(ctx):
    """The routes of this module (none yet)."""
    return []


def job_types():
    """The job types of this module (none yet)."""
    return []


def start(ctx):
    """Nothing to start yet."""


def stop(ctx):
    """Nothing to stop yet."""
