"""Timer queue: durable due-time tasks (user timers, timeouts, retries, backoffs)."""
