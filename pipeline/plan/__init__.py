"""Planning: batches of runs, their expected sizes, and the free-space guard."""
