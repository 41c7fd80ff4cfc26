"""Small helpers shared by every stage: atomic file writes (``atomic``) and the size / memory limits
checked before a run (``limits``)."""
