"""Default plugin: the built-in job types and their routes, registered like any plugin.

- ``ResourceModification`` (:mod:`.modify_job`): ``/{level}/{id}/modify|anonymize``,
  ``/tools/bulk-modify|bulk-anonymize``; ``/instances/{id}/modify|anonymize`` answer the
  rewritten file without a job;
- ``SplitStudy`` and ``MergeStudy`` (:mod:`.split_merge`): ``/studies/{id}/split|merge``.

Routes are in :mod:`.routes`; the byte-level rewriting in :mod:`pacsbox.dicom.rewrite`
and :mod:`pacsbox.dicom.modification`. Both hooks are ``trylast`` so that an installed
plugin can take over a route or a job type name.
"""
from __future__ import annotations

import pluggy

from ..hookspecs import PROJECT_NAME

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookimpl(trylast=True)
def register_job_types(ctx):
    """``ResourceModification``, ``SplitStudy``, ``MergeStudy``."""
    from .modify_job import ResourceModificationJob
    from .split_merge import MergeStudyJob, SplitStudyJob
    return [ResourceModificationJob, SplitStudyJob, MergeStudyJob]


@hookimpl(trylast=True)
def register_routes(ctx):
    """The modification, anonymization, split and merge routes (reference sections 5, 11)."""
    from .routes import routes
    return routes(ctx)
