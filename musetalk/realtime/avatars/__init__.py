"""Avatars: the on-disk format, its fingerprint, preparation (and its background jobs), the memory cache,
staging of uploads and their HTTP routes."""
