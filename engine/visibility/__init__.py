"""Visibility: the query language of the List/Count/Scan workflow-execution APIs.

`query` parses Cadence's advanced-visibility WHERE clause (and builds the same typed `Query`
for ListOpen/ListClosed); `sqlite_sql` compiles a `Query` to SQL for the SQLite visibility
table. The frontend parses, the visibility store compiles: nothing else sees query text.
"""

from engine.visibility.query import (
    SEARCH_ATTRIBUTE_TYPES,
    Query,
    closed_filter,
    format_query,
    open_filter,
    parse_query,
)

__all__ = [
    "SEARCH_ATTRIBUTE_TYPES",
    "Query",
    "closed_filter",
    "format_query",
    "open_filter",
    "parse_query",
]
