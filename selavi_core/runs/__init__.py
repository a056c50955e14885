"""A run folder: its files, and assigning a catalog with a trained checkpoint into one."""
