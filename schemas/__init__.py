"""The vecap record, its pyarrow schema, the status vocabulary and the release-JSON format.

Every stage reads and writes :class:`~schemas.record.Record`; the parquet shards use
:data:`~schemas.record.RECORD_SCHEMA`, derived from the dataclass so the two cannot drift.
"""

from schemas.record import RECORD_SCHEMA, SCHEMA_VERSION, Record, make_uid, record_schema
from schemas.status import FAILURE_STATUSES, Status

__all__ = [
    "FAILURE_STATUSES",
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "Record",
    "Status",
    "make_uid",
    "record_schema",
]
