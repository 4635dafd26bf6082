"""Quantification: kallisto's argument lists, one run quantified and verified, the merged tables."""
