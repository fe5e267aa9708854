"""The VMware Content Library (VCSP) format: model, folder scan and manifest update rules."""

from .manifest import (
    MANIFEST_FILENAMES,
    STATE_DIRNAME,
    ItemSummary,
    ManifestReport,
    check_manifest,
    update_manifest,
)

__all__ = [
    "MANIFEST_FILENAMES",
    "STATE_DIRNAME",
    "ItemSummary",
    "ManifestReport",
    "check_manifest",
    "update_manifest",
]
