"""Models: manifests, inference backends and the scorer."""
