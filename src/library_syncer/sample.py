"""A small, valid sample Content Library for the quick start, demos and tests.

Three items: an OVF template (descriptor, disk, manifest with SHA256 digests),
an ISO image and a plain file, with names that exercise encoding rules.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

OVF_ITEM = "photon-5 template"
ISO_ITEM = "tools ÄÖ iso"
OTHER_ITEM = "readme & notes"

_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
          xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1"
          ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
  </VirtualSystem>
</Envelope>
"""


def _write_random(path: Path, size: int, seed: str) -> None:
    """Deterministic pseudo-random bytes (incompressible, like a streamOptimized disk)."""
    block = hashlib.sha256(seed.encode()).digest()
    with path.open("wb") as f:
        written, counter = 0, 0
        while written < size:
            chunk = b"".join(
                hashlib.sha256(block + (counter + i).to_bytes(8, "big")).digest() for i in range(2048)
            )
            counter += 2048
            chunk = chunk[: size - written]
            f.write(chunk)
            written += len(chunk)


def write_ovf_item(folder: Path, base: str, disk_size: int) -> None:
    """Write an OVF template item: ``base``.ovf, a disk and a ``.mf`` with SHA256 digests."""
    folder.mkdir(parents=True, exist_ok=True)
    disk = folder / f"{base}-disk1.vmdk"
    _write_random(disk, disk_size, base)
    ovf = folder / f"{base}.ovf"
    ovf.write_text(_OVF.format(disk=disk.name, size=disk_size, name=base))
    lines = [f"SHA256({p.name})= {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in (ovf, disk)]
    (folder / f"{base}.mf").write_text("".join(lines))


def make_sample_library(root: Path, disk_size: int = 4 * 1024 * 1024) -> list[str]:
    """Create the sample library under ``root`` (kept if present); returns the item folder names."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / OVF_ITEM).exists():
        write_ovf_item(root / OVF_ITEM, "photon-5", disk_size)
    iso = root / ISO_ITEM / "vmware-tools 12.iso"
    if not iso.exists():
        iso.parent.mkdir(parents=True, exist_ok=True)
        _write_random(iso, 1024 * 1024, "iso")
    other = root / OTHER_ITEM / "README #1.txt"
    if not other.exists():
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_text("Templates for the branch offices.\n")
    os.sync()
    return sorted([OVF_ITEM, ISO_ITEM, OTHER_ITEM])
