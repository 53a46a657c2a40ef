"""Writing outputs safely and recording how they were made: atomic folders/files, hashes, manifests."""

from merginguriel.io.atomic import atomic_dir, atomic_write_text, write_json_atomic
from merginguriel.io.hashing import checkpoint_hash, file_sha256
from merginguriel.io.manifest import package_versions, read_manifest, write_manifest

__all__ = [
    "atomic_dir",
    "atomic_write_text",
    "write_json_atomic",
    "checkpoint_hash",
    "file_sha256",
    "package_versions",
    "read_manifest",
    "write_manifest",
]
