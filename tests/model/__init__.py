"""Model-based test of the whole cache against the consistency contract (issue 14)."""
