"""The SCP (not built yet)."""
from __future__ import annotations


def start(ctx):
    """Start the SCP (not built yet)."""


def stop(ctx):
    """Stop the SCP (not built yet)."""
