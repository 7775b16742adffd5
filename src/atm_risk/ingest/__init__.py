"""Reading source files row by row, validating each row, reporting bad rows by line.

The pipeline is the same for every kind of record:

``read_source`` (CSV / GeoJSON / GeoPackage, gzip or not) yields :class:`SourceRow` with
its location in the file -> a *profile* maps the source's columns to the canonical ones ->
a pydantic schema validates the canonical row -> the domain service upserts all valid rows
in one transaction. Every rejected row is reported as ``line N: reason`` (CSV, header =
line 1) or ``feature N: reason`` (GeoJSON, GeoPackage).
"""
