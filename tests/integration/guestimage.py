"""Test guest disk images for real virt-v2v conversions (built by scripts/build-guest.sh).

The script does the caching and locking; this module only runs it and parses its
``os_disk=`` / ``data_disk=`` lines, so a cached call costs a few milliseconds.
"""

import logging
import os
import subprocess
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parent / "scripts" / "build-guest.sh"
DEFAULT_CACHE_DIR = "/var/tmp/v2vw-cache"
CACHE_ENV = "V2VW_CACHE_DIR"
# A cold build (debootstrap download) took ~95 s here; leave room for slow mirrors.
BUILD_TIMEOUT = 1800


class GuestImages(NamedTuple):
    os_disk: Path    # bootable-looking Debian 12 (no initrd), 512 MiB raw
    data_disk: Path  # ext4 with hello.txt, no OS, 64 MiB raw


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def parse_script_output(text: str) -> dict:
    """``key=value`` lines of build-guest.sh stdout -> dict (other lines ignored)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("os_disk", "data_disk"):
            out[key] = value
    return out


def ensure_guest_images(cache_dir=None, *, script: Path = SCRIPT,
                        timeout: float = BUILD_TIMEOUT) -> GuestImages:
    """Build the guest images if the cache lacks them (or is stale) and return their paths.

    Raises RuntimeError with the script's stderr tail when the build fails.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    env = dict(os.environ, **{CACHE_ENV: str(cache)})
    log.info("ensuring guest images in %s", cache)
    proc = subprocess.run(["bash", str(script), "all"], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s"
                           % (script, proc.returncode, proc.stderr[-2000:]))
    paths = parse_script_output(proc.stdout)
    try:
        images = GuestImages(os_disk=Path(paths["os_disk"]),
                             data_disk=Path(paths["data_disk"]))
    except KeyError as exc:
        raise RuntimeError("%s printed no %s line: %r" % (script, exc, proc.stdout)) from None
    for p in images:
        if not p.is_file():
            raise RuntimeError("%s reported %s but it does not exist" % (script, p))
    return images


def ext4_cat(image, path, offset=1048576):
    """Read a file from the ext4 partition at 1 MiB of a guest image without mounting
    (e2fsprogs io option)."""
    return subprocess.run(["debugfs", "-R", "cat %s" % path, "%s?offset=%d" % (image, offset)],
                          check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          timeout=60).stdout
