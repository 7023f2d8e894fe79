"""Matching: task lists that pair decision/activity tasks and queries with long-polling workers."""

from engine.matching.protocols import PolledTask, TaskMatcher, TaskType

__all__ = ["PolledTask", "TaskMatcher", "TaskType"]
