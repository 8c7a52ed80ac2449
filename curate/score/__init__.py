"""`curate score`: CLIP scores and image embeddings for every sample of a pool."""
