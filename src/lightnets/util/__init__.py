"""Small helpers shared by every stage: atomic file writes (``atomic``), device names (``device``), matplotlib
figures and PNG saving (``figures``) and the size / memory limits checked before a run (``limits``)."""
