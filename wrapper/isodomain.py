"""Finding a Windows drivers ISO in the host's ISO storage domain (docs/contract.md §3.5)."""
import glob
import logging
import os
import re

log = logging.getLogger(__name__)

ISO_IMAGES = os.path.join("images", "11111111-1111-1111-1111-111111111111")

# Highest priority first.  A pattern with a group carries a version.
_PATTERNS = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"^RHV-toolsSetup_([0-9._-]+)\.iso$",
    r"^rhv-tools-setup\.iso$",
    r"^RHEV-toolsSetup_([0-9._-]+)\.iso$",
    r"^rhev-tools-setup\.iso$",
    r"^oVirt-toolsSetup_([a-z0-9._-]+)\.iso$",
    r"^ovirt-tools-setup\.iso$",
    r"^virtio-win-([0-9.-]+)\.iso$",
    r"^virtio-win\.iso$",
))


def _version_key(text):
    """'4.3-12.el7' -> (4, 3, 12, 'el', 7): numeric parts compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.findall(r"\d+|[a-z]+", (text or "").lower()))


def rank(name):
    """Sort key for an ISO file name (lower sorts first = better), or None."""
    for priority, pattern in enumerate(_PATTERNS):
        m = pattern.match(name)
        if m:
            version = m.group(1) if m.groups() else ""
            # newest first within a priority: negate by sorting on reverse later
            return priority, version
    return None


def best_iso(names):
    """Pick the best ISO name out of ``names`` (docs/contract.md §3.5), or None."""
    ranked = [(rank(n), n) for n in names]
    ranked = [(r, n) for r, n in ranked if r is not None]
    if not ranked:
        return None
    top = min(r[0] for r, _ in ranked)
    same = [(r[1], n) for r, n in ranked if r[0] == top]
    same.sort(key=lambda vn: (_version_key(vn[0]), vn[1]), reverse=True)
    return same[0][1]


def iso_domain_dirs(mount_root):
    """ISO domain image directories under the storage-domain mount root.

    Layout: <root>/<server:_export>/<sd_uuid>/{dom_md,images/1111...}.  Mount
    points can be nested one level deeper (glusterSD/...), so look at two depths.
    """
    found = []
    for pattern in ("*/*", "*/*/*"):
        for sd in sorted(glob.glob(os.path.join(glob.escape(mount_root), pattern))):
            images = os.path.join(sd, ISO_IMAGES)
            if os.path.isdir(os.path.join(sd, "dom_md")) and os.path.isdir(images):
                found.append(images)
    return found


def find_iso(mount_root, name=None):
    """Full path of ``name`` in an ISO domain, or of the best ISO when name is None."""
    for images in iso_domain_dirs(mount_root):
        try:
            names = [n for n in os.listdir(images)
                     if os.path.isfile(os.path.join(images, n))]
        except OSError as e:
            log.warning("cannot list ISO domain %s: %s", images, e)
            continue
        pick = name if name in names else (best_iso(names) if name is None else None)
        if pick:
            return os.path.join(images, pick)
    return None
