"""Transfer queue: immediate tasks (dispatch to matching, children, cross-run signals/cancels,
parent notification) consumed from the transfer topic and executed at least once."""
