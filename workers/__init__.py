"""The worker service: system work beside the engine (schedules, async API consumer, stream
ingress, retention scanners). Not built yet: see the issues."""
