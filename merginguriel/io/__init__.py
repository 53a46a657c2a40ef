"""Writing outputs safely and recording how they were made: atomic folders/files, hashes, manifests."""

from merginguriel.io.atomic import atomic_dir, atomic_file, atomic_write_text, remove_dead_temporaries, write_json_atomic
from merginguriel.io.jsonfile import check_model_json, model_files_checked, read_json
from merginguriel.io.hashing import checkpoint_hash, checkpoint_ref, file_sha256, weights_stat
from merginguriel.io.manifest import package_versions, read_manifest, write_manifest

__all__ = [
    "atomic_dir",
    "atomic_file",
    "atomic_write_text",
    "remove_dead_temporaries",
    "write_json_atomic",
    "checkpoint_hash",
    "checkpoint_ref",
    "weights_stat",
    "file_sha256",
    "check_model_json",
    "model_files_checked",
    "read_json",
    "package_versions",
    "read_manifest",
    "write_manifest",
]
