import pytest

from wrapper import isodomain


@pytest.mark.parametrize("names,best", [
    (["virtio-win.iso", "virtio-win-0.1.240.iso"], "virtio-win-0.1.240.iso"),
    (["virtio-win-0.1.9.iso", "virtio-win-0.1.185.iso", "virtio-win-0.1.20.iso"], "virtio-win-0.1.185.iso"),
    (["oVirt-toolsSetup_4.4-1.el8.iso", "virtio-win-0.1.240.iso"], "oVirt-toolsSetup_4.4-1.el8.iso"),
    (["oVirt-toolsSetup_4.3-3.el7.iso", "oVirt-toolsSetup_4.10-1.el8.iso"], "oVirt-toolsSetup_4.10-1.el8.iso"),
    (["ovirt-tools-setup.iso", "RHEV-toolsSetup_3.6_9.iso"], "RHEV-toolsSetup_3.6_9.iso"),
    (["rhev-tools-setup.iso", "rhv-tools-setup.iso"], "rhv-tools-setup.iso"),
    (["RHV-toolsSetup_4.3_10.iso", "RHV-toolsSetup_4.4_8.iso", "rhv-tools-setup.iso"], "RHV-toolsSetup_4.4_8.iso"),
    (["rhv-toolssetup_4.2_5.ISO", "virtio-win.iso"], "rhv-toolssetup_4.2_5.ISO"),      # case-insensitive
    (["windows.iso", "notes.txt", "virtio-win.iso.bak"], None),
    ([], None),
])
def test_best_iso(names, best):
    assert isodomain.best_iso(names) == best


def make_domain(root, mount, sd, names, iso=True):
    base = root / mount / sd
    (base / "dom_md").mkdir(parents=True)
    images = base / "images" / ("11111111-1111-1111-1111-111111111111" if iso else "aaaa")
    images.mkdir(parents=True)
    for n in names:
        (images / n).write_text("iso")
    return images


def test_find_iso_among_several_domains(tmp_path):
    make_domain(tmp_path, "nfs1:_data", "sd-data", ["virtio-win-9.9.iso"], iso=False)
    (tmp_path / "nfs2:_other" / "not-a-domain" / "images").mkdir(parents=True)
    images = make_domain(tmp_path, "nfs3:_iso", "sd-iso", ["virtio-win-0.1.240.iso", "RHV-toolsSetup_4.4_8.iso"])
    assert isodomain.find_iso(str(tmp_path)) == str(images / "RHV-toolsSetup_4.4_8.iso")
    assert isodomain.find_iso(str(tmp_path), "virtio-win-0.1.240.iso") == str(images / "virtio-win-0.1.240.iso")
    assert isodomain.find_iso(str(tmp_path), "virtio-win-9.9.iso") is None


def test_find_iso_in_gluster_style_nested_mount(tmp_path):
    images = make_domain(tmp_path, "glusterSD/host:_iso", "sd", ["virtio-win.iso"])
    assert isodomain.find_iso(str(tmp_path)) == str(images / "virtio-win.iso")


def test_no_mount_root(tmp_path):
    assert isodomain.find_iso(str(tmp_path / "missing")) is None
