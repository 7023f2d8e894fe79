"""The embedded SQLite backend: `SqliteStore` and the shared single-thread `SqliteDatabase`."""

from engine.persistence.sqlite.db import SqliteDatabase
from engine.persistence.sqlite.store import SqliteStore

__all__ = ["SqliteDatabase", "SqliteStore"]
