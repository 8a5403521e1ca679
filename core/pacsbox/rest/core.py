"""Default plugin: the core REST routes (registered from ``DEFAULT_PLUGINS``)."""
from __future__ import annotations

from ..hookspecs import hookimpl
from . import bulk, instances, labels, protection, reconstruct, resources_api, slices, tools, webdav


@hookimpl(trylast=True)
def register_routes(ctx):
    """The core routes of reference sections 2 (resources, instances, tools, changes)."""
    return (instances.routes(ctx) + resources_api.routes(ctx) + tools.routes(ctx) + bulk.routes(ctx)
            + slices.routes(ctx) + labels.routes(ctx) + protection.routes(ctx) + reconstruct.routes(ctx)
            + webdav.routes(ctx))


@hookimpl(trylast=True)
def register_job_types(ctx):
    """``ReconstructAll`` (``POST /tools/reconstruct`` with ``Asynchronous``)."""
    return [reconstruct.ReconstructAllJob]


@hookimpl(trylast=True)
def register_metrics(ctx):
    """Orthanc's core metrics (reference section 8.1) and pacsbox's histograms."""
    from ..metrics import MetricSpec
    specs = [
        MetricSpec("orthanc_up_time_s", "gauge", "Time since the server started", "s"),
        MetricSpec("orthanc_last_change", "gauge", "Seq of the last change", ""),
        MetricSpec("orthanc_count_patients", "gauge", "Number of patients", ""),
        MetricSpec("orthanc_count_studies", "gauge", "Number of studies", ""),
        MetricSpec("orthanc_count_series", "gauge", "Number of series", ""),
        MetricSpec("orthanc_count_instances", "gauge", "Number of instances", ""),
        MetricSpec("orthanc_disk_size_mb", "gauge", "Stored size", "MiB"),
        MetricSpec("orthanc_uncompressed_size_mb", "gauge", "Uncompressed stored size", "MiB"),
        MetricSpec("orthanc_jobs_pending", "gauge", "Pending jobs", ""),
        MetricSpec("orthanc_jobs_running", "gauge", "Running jobs", ""),
        MetricSpec("orthanc_jobs_completed", "gauge", "Completed jobs in the history", ""),
        MetricSpec("orthanc_jobs_success", "gauge", "Successful jobs in the history", ""),
        MetricSpec("orthanc_jobs_failed", "gauge", "Failed jobs in the history", ""),
        MetricSpec("orthanc_jobs_total_success", "counter", "Jobs that succeeded since the start", ""),
        MetricSpec("orthanc_jobs_total_failed", "counter", "Jobs that failed since the start", ""),
        MetricSpec("orthanc_jobs_total_completed", "counter", "Jobs that ended since the start", ""),
        MetricSpec("orthanc_rest_api_active_requests", "max10s", "Concurrent REST requests (max over 10 s)", ""),
        MetricSpec("orthanc_rest_api_duration_ms", "max10s", "REST request duration (max over 10 s)", "ms"),
        MetricSpec("orthanc_store_dicom_duration_ms", "max10s", "Time to store one instance (max over 10 s)", "ms"),
        MetricSpec("orthanc_storage_create_duration_ms", "max10s", "Storage write time (max over 10 s)", "ms"),
        MetricSpec("orthanc_storage_read_duration_ms", "max10s", "Storage read time (max over 10 s)", "ms"),
        MetricSpec("orthanc_storage_remove_duration_ms", "max10s", "Storage remove time (max over 10 s)", "ms"),
        MetricSpec("orthanc_storage_read_bytes", "counter", "Bytes read from the storage area", "bytes"),
        MetricSpec("orthanc_storage_written_bytes", "counter", "Bytes written to the storage area", "bytes"),
        MetricSpec("pacsbox_rest_api_request_duration_seconds", "histogram", "REST request duration by route",
                   "s", ("method", "route")),
        MetricSpec("pacsbox_job_step_duration_seconds", "histogram", "Job step duration by job type", "s",
                   ("type",)),
    ]
    return specs


@hookimpl(trylast=True)
def startup(ctx):
    """Refresh the computed gauges (counts, sizes, jobs, uptime) at every scrape."""
    import time

    def collect(store):
        s = ctx.index.statistics()
        store.set_value("orthanc_up_time_s", int(time.time() - ctx.started_at))
        store.set_value("orthanc_count_patients", s["CountPatients"])
        store.set_value("orthanc_count_studies", s["CountStudies"])
        store.set_value("orthanc_count_series", s["CountSeries"])
        store.set_value("orthanc_count_instances", s["CountInstances"])
        store.set_value("orthanc_disk_size_mb", round(s["TotalDiskSize"] / 1048576.0, 6))
        store.set_value("orthanc_uncompressed_size_mb", round(s["TotalUncompressedSize"] / 1048576.0, 6))
        last = ctx.index.last_change_seq()
        store.set_value("orthanc_last_change", last)
        c = ctx.jobs.counts()
        store.set_value("orthanc_jobs_pending", c["Pending"])
        store.set_value("orthanc_jobs_running", c["Running"])
        store.set_value("orthanc_jobs_success", c["Success"])
        store.set_value("orthanc_jobs_failed", c["Failure"])
        store.set_value("orthanc_jobs_completed", c["Success"] + c["Failure"])
        t = ctx.jobs.totals()  # only grow, whatever JobsHistorySize forgets (Orthanc 1.13)
        store.set_value("orthanc_jobs_total_success", t["Success"])
        store.set_value("orthanc_jobs_total_failed", t["Failure"])
        store.set_value("orthanc_jobs_total_completed", t["Success"] + t["Failure"])

    ctx.metrics.add_collector(collect)
