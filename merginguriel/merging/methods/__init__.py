"""Merge methods, one small module each; every module here is imported by ``registry.load_methods`` (see registry)."""
