"""Review: the queue of what waits for a reviewer (pending model tags, candidate tags, suspect human labels) and
every decision, kept as events (``queue``)."""
