"""Task data: the task registry, the hub client, sources (hub, original files, pocket suite), tokenised features, VME
training pairs (x, x~), synonym augmentation, captions."""
