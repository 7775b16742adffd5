"""Errors that stop an ingest as a whole (as opposed to a rejected row)."""


class IngestError(Exception):
    """The file as a whole cannot be read: missing, unknown format, missing columns.

    Nothing is written when this is raised.
    """
