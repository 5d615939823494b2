"""The `dataslayer` command's queue and stack commands (composed with mlcore's in `worker.cli`)."""
