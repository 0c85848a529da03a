"""Storage (a folder or any pyarrow URI), the schema of what a sweep writes, and the trial records."""
