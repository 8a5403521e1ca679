"""Default plugin: the built-in job types (modify/anonymize, split/merge) and their routes.

(Filled in by the jobs issue.)
"""
from __future__ import annotations

import pluggy

from ..hookspecs import PROJECT_NAME

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookimpl(trylast=True)
def register_job_types(ctx):
    """Built-in job types."""
    return []
