"""Default plugin: the built-in job types and their routes, registered like any plugin.

- ``ResourceModification`` (:mod:`.modify_job`): ``/{level}/{id}/modify|anonymize``,
  ``/tools/bulk-modify|bulk-anonymize``; ``/instances/{id}/modify|anonymize`` answer the
  rewritten file without a job;
- ``SplitStudy`` and ``MergeStudy`` (:mod:`.split_merge`): ``/studies/{id}/split|merge``.

Routes are in :mod:`.routes`; the byte-level rewriting in :mod:`pacsbox.dicom.rewrite`
and :mod:`pacsbox.dicom.modification`. Both hooks are ``trylast`` so that an installed
plugin can take over a route or a job type name.

Compared with Orthanc 1.10.1 (checked side by side in
``tests/builtin/test_reference_orthanc.py``), deliberately:

- (0012,0063) *De-identification Method* names pacsbox: ``"pacsbox 0.1.0 - PS
  3.15-2021b Table E.1-1 Basic Profile"`` instead of ``"Orthanc 1.10.1 - ..."``.
- New UIDs are ``2.25.<integer>`` UIDs and anonymized PatientIDs UUIDs, derived from a
  random per-job seed (Orthanc: DCMTK's random ``1.2.276.0.7230010.3.1.x`` roots and
  random UUIDs). The same job always gives the same UIDs, so a job resumed after a crash
  writes no duplicate.
- A replacement value that the file's character set cannot hold converts the file to
  ``ISO_IR 192`` (UTF-8), re-encoding its text; Orthanc 1.10.1 writes it lossy
  (``"Łódź"`` became ``"ód"``).
- Elements stored with VR UN are read with their dictionary VR, so the PatientID and UIDs
  of such files are anonymized (Orthanc 1.10.1 leaves them unchanged).
- Request checks, level rules included, run before any job exists: a synchronous call
  gets the same error as from Orthanc's failing job, an asynchronous one gets it instead
  of a job ID. Removing a main identifier with ``Force`` gives Details "It is forbidden to
  remove one of the main Dicom identifiers" (1.10.1: no Details).
- A job that fails deletes the instances it had stored (Orthanc keeps a partial new
  study); a canceled job keeps them, and resubmitting it rewrites the same UIDs.
- ``KeepSource: false`` deletes only the sources that were rewritten (Orthanc also deletes
  those that failed in a permissive job).
- ``DicomVersion`` ``2023b`` is accepted (added in Orthanc 1.12.1).
- Malformed requests that crash Orthanc 1.10.1 (500) get a 400/404 error: a non-object
  split body, a non-string bulk ``Level``, a split of a study ID given as a series.
- The File Meta Information is regenerated with pacsbox's implementation UID; group
  length elements of the data set are dropped; encapsulated Pixel Data keeps its VR
  (DCMTK writes OB).
"""
from __future__ import annotations

from ..hookspecs import hookimpl


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
