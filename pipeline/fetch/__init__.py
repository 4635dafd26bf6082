"""Getting a run's reads: verified transfers with resume and retries, the per-run source order, and
the ``.sra`` route through fasterq-dump."""
