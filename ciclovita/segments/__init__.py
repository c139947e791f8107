"""Dynamic segments: the condition language, segment files, and membership recompute."""
