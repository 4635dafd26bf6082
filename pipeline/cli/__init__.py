"""Commands besides the Luigi run: where a run stands, resetting failed runs, planning again."""
