"""The index schema, written once for SQLite and PostgreSQL.

Types and statements stay in the subset both engines accept; the only dialect
differences (auto-increment keys, placeholders) are filled in by :func:`schema_statements`
and by the connection wrapper.

Levels are stored as small integers: 0 patient, 1 study, 2 series, 3 instance (Orthanc's
``ResourceType`` order).
"""
from __future__ import annotations

SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS resources (
    id {pk_autoinc},
    level SMALLINT NOT NULL,
    public_id VARCHAR(64) NOT NULL UNIQUE,
    parent_id BIGINT REFERENCES resources(id) ON DELETE CASCADE,
    main_tags TEXT NOT NULL,
    last_update VARCHAR(20) NOT NULL,
    last_activity DOUBLE PRECISION NOT NULL,
    is_stable SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent_id);
CREATE INDEX IF NOT EXISTS resources_level ON resources(level, id);
CREATE INDEX IF NOT EXISTS resources_unstable ON resources(is_stable, last_activity);
CREATE TABLE IF NOT EXISTS identifiers (
    resource_id BIGINT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    tag VARCHAR(64) NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identifiers_tag_value ON identifiers(tag, value);
CREATE INDEX IF NOT EXISTS identifiers_value ON identifiers(value);
CREATE INDEX IF NOT EXISTS identifiers_resource ON identifiers(resource_id);
CREATE TABLE IF NOT EXISTS metadata (
    resource_id BIGINT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    name VARCHAR(128) NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_id, name)
);
CREATE TABLE IF NOT EXISTS attachments (
    resource_id BIGINT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    content_type INTEGER NOT NULL,
    uuid VARCHAR(64) NOT NULL,
    compressed_size BIGINT NOT NULL,
    uncompressed_size BIGINT NOT NULL,
    compression_type INTEGER NOT NULL DEFAULT 0,
    md5 VARCHAR(32),
    PRIMARY KEY (resource_id, content_type)
);
CREATE TABLE IF NOT EXISTS changes (
    seq {pk_autoinc},
    change_type VARCHAR(32) NOT NULL,
    resource_id BIGINT REFERENCES resources(id) ON DELETE CASCADE,
    public_id VARCHAR(64) NOT NULL,
    level SMALLINT NOT NULL,
    date VARCHAR(20) NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_resource ON changes(resource_id);
CREATE TABLE IF NOT EXISTS exports (
    seq {pk_autoinc},
    level SMALLINT NOT NULL,
    public_id VARCHAR(64) NOT NULL,
    remote_modality TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    date VARCHAR(20) NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    resource_id BIGINT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    label VARCHAR(64) NOT NULL,
    PRIMARY KEY (resource_id, label)
);
CREATE INDEX IF NOT EXISTS labels_label ON labels(label);
CREATE TABLE IF NOT EXISTS protected_patients (
    resource_id BIGINT PRIMARY KEY REFERENCES resources(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS revisions (
    resource_id BIGINT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    kind SMALLINT NOT NULL,
    name VARCHAR(128) NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (resource_id, kind, name)
);
CREATE TABLE IF NOT EXISTS global_properties (
    name VARCHAR(128) PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def schema_statements(dialect: str) -> list[str]:
    """The ``CREATE`` statements for ``dialect`` (``"sqlite"`` or ``"postgresql"``)."""
    if dialect == "sqlite":
        sql = _TABLES.format(pk="INTEGER PRIMARY KEY", pk_autoinc="INTEGER PRIMARY KEY AUTOINCREMENT")
    elif dialect == "postgresql":
        sql = _TABLES.format(pk="BIGSERIAL PRIMARY KEY", pk_autoinc="BIGSERIAL PRIMARY KEY")
    else:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    return [s.strip() for s in sql.split(";") if s.strip()]
