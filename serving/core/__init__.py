"""Version lifecycle: which versions should be loaded, and moving them there safely."""
