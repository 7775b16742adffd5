"""Cash machines: the ORM model, the canonical record, ingest profiles and services."""
