"""FASTQ reading: counting spots, checking mates, and capping a run at ``download.max_bp``."""
