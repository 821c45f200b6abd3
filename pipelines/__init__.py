"""The compress job: Beam transforms around :mod:`commer_core`.

Importing Beam with google-cloud-storage installed but not Beam's ``[gcp]`` extra logs
``WARNING:root:apitools not found, and bigquery client libraries are not available ...``
(``apache_beam/io/gcp/internal/clients/bigquery/__init__.py``, on the root logger). The job
never uses BigQuery, so that one notice is dropped here, before any module of this package
imports Beam; every other log record passes.
"""

from __future__ import annotations

import logging


class _DropApitoolsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


if not any(isinstance(f, _DropApitoolsNotice) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_DropApitoolsNotice())
