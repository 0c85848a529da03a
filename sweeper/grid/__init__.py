"""Stage 0, the grid file: read, validate and expand ``search_spaces/<name>.yaml`` into trial specs (no Ray)."""
