"""Make an MBR disk image boot GRUB (BIOS), writing the image file directly.

``grub-install`` and ``grub-bios-setup`` look up the device the GRUB
directory lives on, which fails for a disk image in a plain file; this does
what they do for an MBR disk with a gap before its first partition:

- ``boot.img``'s code goes into the first 440 bytes of sector 0 (the disk
  signature and partition table behind it stay), with the sector of
  ``core.img`` patched in and the boot-drive check enabled for hard disks;
- ``core.img`` goes into the gap from sector 1 on, and the block list at the
  end of its first sector points at the rest of it.

Usage: grub_mbr.py DISK BOOT.IMG CORE.IMG
"""

from __future__ import annotations

import struct
import sys

SECTOR = 512
CODE_SIZE = 0x1B8  # boot code; the NT disk signature and partition table follow
KERNEL_SECTOR = 0x5C  # boot.img: 64-bit LBA of core.img's first sector
BOOT_DRIVE = 0x64  # boot.img: 0xff = the drive the BIOS booted from
DRIVE_CHECK = 0x66  # boot.img: two NOPs turn on the hard disk workaround
CORE_START = 1  # core.img right after the MBR
KERNEL_SEG = 0x800  # where core.img's first sector is loaded (0x8000)
BLOCKLIST = struct.Struct("<QHH")  # start sector, sector count, load segment


class SetupError(Exception):
    """The images do not fit together."""


def embed(disk: str, boot_img: bytes, core_img: bytes) -> None:
    """Write GRUB's boot and core images into the MBR disk image ``disk``."""
    if len(boot_img) != SECTOR:
        raise SetupError(f"boot.img is {len(boot_img)} bytes, not {SECTOR}")
    if len(core_img) < SECTOR:
        raise SetupError("core.img is shorter than one sector")
    core_sectors = -(-len(core_img) // SECTOR)
    core = bytearray(core_img.ljust(core_sectors * SECTOR, b"\0"))
    with open(disk, "r+b") as fh:
        mbr = bytearray(fh.read(SECTOR))
        if len(mbr) != SECTOR or mbr[510:512] != b"\x55\xaa":
            raise SetupError(f"{disk} has no MBR partition table")
        starts = [
            struct.unpack_from("<I", mbr, 0x1BE + 16 * i + 8)[0]
            for i in range(4)
            if mbr[0x1BE + 16 * i + 4] != 0
        ]
        if not starts:
            raise SetupError(f"{disk} has no partition")
        if CORE_START + core_sectors > min(starts):
            raise SetupError(
                f"core.img needs {core_sectors} sectors; the first partition starts"
                f" at sector {min(starts)}"
            )
        boot = bytearray(boot_img)
        struct.pack_into("<Q", boot, KERNEL_SECTOR, CORE_START)
        boot[BOOT_DRIVE] = 0xFF
        struct.pack_into("<H", boot, DRIVE_CHECK, 0x9090)
        mbr[:CODE_SIZE] = boot[:CODE_SIZE]
        BLOCKLIST.pack_into(
            core,
            SECTOR - BLOCKLIST.size,
            CORE_START + 1,
            core_sectors - 1,
            KERNEL_SEG + (SECTOR >> 4),
        )
        fh.seek(0)
        fh.write(mbr)
        fh.seek(CORE_START * SECTOR)
        fh.write(core)


def main(argv: list[str]) -> int:
    """Command line entry (see the module docstring)."""
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    disk, boot_path, core_path = argv
    with open(boot_path, "rb") as fh:
        boot = fh.read()
    with open(core_path, "rb") as fh:
        core = fh.read()
    try:
        embed(disk, boot, core)
    except SetupError as err:
        print(f"grub_mbr.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
