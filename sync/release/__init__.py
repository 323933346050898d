"""Signed software releases: the manifest, the bundle file, the release key, the rollout."""
