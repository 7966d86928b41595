"""Task data: sources (hub, original files, pocket suite), tokenised features, VME training pairs, captions."""
