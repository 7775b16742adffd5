"""Attacks on cash machines: the ORM model, the canonical record, ingest profiles."""
