import json

import pytest

from wrapper import progress as p
from tests.fakes import data


def feed_all(parser, blob, size):
    events = []
    for i in range(0, len(blob), size):
        events += parser.feed(blob[i:i + size])
    return events + parser.flush()


def read(name):
    with open(data(name), "rb") as f:
        return f.read()


RUN05_EVENTS = [p.DiskSource(0, "/vmfs/volumes/datastore1/testvm/testvm-flat.vmdk"),
                p.CopyingDisk(0, 1), p.DiskSize(0, 1073741824)] + [
    p.DiskProgress(float(x)) for x in (0, 0, 12, 25, 37, 50, 62, 75, 87, 100)]


@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20, 1 << 30])
def test_real_2x_ssh_log_gives_the_same_events_whatever_the_read_size(size):
    assert feed_all(p.LogParser(), read("run05-vmx-ssh-port-uri.vx.log"), size) == RUN05_EVENTS


def test_real_disk_input_and_vdsm_ovf():
    events = feed_all(p.LogParser(), read("run08-disk-vdsm-ovirt-flavour.vx.log"), 65536)
    assert events[0] == p.DiskSource(0, "guest-none.img")
    assert events[-1] == p.VmId("99999999-8888-7777-6666-555555555555", True)


def test_real_sigterm_log():
    events = feed_all(p.LogParser(), read("kill01-sigterm-during-copy.vx.log"), 65536)
    assert events[-1] == p.KilledBySignal("SIGTERM")
    assert p.DiskProgress(12.0) in events


def test_real_failure_log():
    events = feed_all(p.LogParser(), read("fail02-ssh-missing-vmx.vx.log"), 65536)
    cause = "scp: /vmfs/volumes/datastore1/nosuchvm/nosuchvm.vmx: No such file or directory"
    assert events == [p.V2vError("could not copy the VMX file from the remote server, see earlier error messages",
                                 cause, (cause,))]


def test_machine_readable_real_file():
    events = p.MachineReadableParser().feed(read("run05-vmx-ssh-port-uri.vx.mr.log"))
    assert events[0] == p.V2vMessage("message", "Setting up the source: -i vmx "
                                     "ssh://root@127.0.0.1:22022/vmfs/volumes/datastore1/testvm/testvm.vmx")
    assert [e.type for e in events].count("warning") == 3
    assert events[-1] == p.V2vMessage("message", "Finishing off")


def test_machine_readable_split_lines_and_garbage():
    parser = p.MachineReadableParser()
    line = json.dumps({"message": "Copying disk 1/1", "timestamp": "t", "type": "message"}).encode()
    assert parser.feed(line[:10]) == []
    assert parser.feed(line[10:] + b"\nnot json\n{\"x\": 1}\n") == [p.V2vMessage("message", "Copying disk 1/1")]


def test_v1_dialect_vddk_two_disks():
    log = (b"nbdkit: debug: Opening file [datastore1] vm/vm.vmdk (ha-nfcssl://[datastore1] vm/vm.vmdk@10.2.0.20:902)\n"
           b"nbdkit: vddk[1]: debug: Opening file [datastore1] vm/vm_1.vmdk (ha-nfcssl://x@10.2.0.20:902)\n"
           b"nbdkit: debug: Opening file [datastore1] vm/vm.vmdk (again)\n"
           b"Copying disk 1/2 to /rhev/data-center/x (raw)\n"
           b"    (0.00/100%)\r    (12.34/100%)\r    (100.00/100%)\n"
           b"Copying disk 2/2 to /rhev/data-center/y (raw)\n"
           b"    (50.5/100%)\n"
           b"disk.id = '0a1b2c3d-1111-2222-3333-444455556666'\n")
    assert feed_all(p.LogParser(), log, 5) == [
        p.DiskSource(0, "[datastore1] vm/vm.vmdk"), p.DiskSource(1, "[datastore1] vm/vm_1.vmdk"),
        p.CopyingDisk(0, 2), p.DiskProgress(0.0), p.DiskProgress(12.34), p.DiskProgress(100.0),
        p.CopyingDisk(1, 2), p.DiskProgress(50.5), p.DiskId("0a1b2c3d-1111-2222-3333-444455556666")]


def test_v1_dialect_ssh_overlay_uri():
    log = (b'  overlay source qemu URI: json:{ "file.driver": "ssh", "file.path": '
           b'"/vmfs/volumes/datastore1/vm/vm-flat.vmdk", "file.host": "10.2.0.20" }\n')
    assert p.LogParser().feed(log) == [p.DiskSource(0, "/vmfs/volumes/datastore1/vm/vm-flat.vmdk")]


def test_2x_multi_disk_bars_interleaved_with_debug():
    log = (b"running nbdkit:\n LANG=C 'nbdkit' '--unix' '/tmp/v2v.X/in1' '--filter' 'cow' 'ssh' "
           b"'host=h' 'path=/vmfs/volumes/ds/vm/vm_1-flat.vmdk' 'port=22'\n"
           b"running nbdkit:\n LANG=C 'nbdkit' '--unix' '/tmp/v2v.X/in0' 'vddk' 'libdir=/opt' "
           b"'file=[ds] vm/vm.vmdk' 'thumbprint=AB'\n"
           b"\texport-size: 2147483648 (2G)\n\turi: nbd+unix:///?socket=/tmp/v2v.X/in0\n"
           b"\texport-size: 999 (1K)\n\turi: nbd+unix:///?socket=/tmp/v2v.X/out0\n"
           b"[  52.1] Copying disk 1/2\n"
           b"\xe2\x96\x9d   0% [----]\r\xe2\x96\x97  12% [*---]\rnbdkit: ssh[5]: debug: pread 50% done\n"
           b"mount -o size=20%,mode=0755\n"
           b"[  60.0] Copying disk 2/2\n\xe2\x96\x9d 100% [****]\n")
    assert feed_all(p.LogParser(), log, 3) == [
        p.DiskSource(1, "/vmfs/volumes/ds/vm/vm_1-flat.vmdk"), p.DiskSource(0, "[ds] vm/vm.vmdk"),
        p.DiskSize(0, 2147483648), p.CopyingDisk(0, 2), p.DiskProgress(0.0), p.DiskProgress(12.0),
        p.CopyingDisk(1, 2), p.DiskProgress(100.0)]


def test_export_domain_ovf_vm_id_and_upload_disk_ids():
    log = (b"OVF:\n<?xml version='1.0' encoding='utf-8'?>\n"
           b"  <Content ovf:id='out' xsi:type='ovf:VirtualSystem_Type'>\n"
           b"    <Section ovf:id='07ADF74D-14b0-4d4d-98de-e5fee326d57d' ovf:required='false' "
           b"xsi:type='ovf:OperatingSystemSection_Type'>\n"
           b"disk.id = '11111111-2222-3333-4444-555555555555'\ntransfer.id = 'x'\n")
    assert p.LogParser().feed(log) == [p.VmId("07adf74d-14b0-4d4d-98de-e5fee326d57d", False),
                                       p.DiskId("11111111-2222-3333-4444-555555555555")]


def test_long_line_without_separator_is_bounded():
    parser = p.LogParser()
    for _ in range(5):
        parser.feed(b"x" * (1 << 20))
    assert len(parser._carry) <= p.MAX_CARRY
    assert parser.feed(b"\n[  1.0] Copying disk 1/1\n") == [p.CopyingDisk(0, 1)]


def test_line_split_exactly_at_marker():
    parser = p.LogParser()
    assert parser.feed(b"[  52.1] Copying di") == []
    assert parser.feed(b"sk 1/3\n") == [p.CopyingDisk(0, 3)]


@pytest.mark.parametrize("path,expected", [
    ("/vmfs/volumes/datastore1/vm/vm-flat.vmdk", "[datastore1] vm/vm.vmdk"),
    ("/vmfs/volumes/ds 2/my vm/my vm_1-flat.vmdk", "[ds 2] my vm/my vm_1.vmdk"),
    ("/vmfs/volumes/ds/vm/vm.vmdk", "[ds] vm/vm.vmdk"),
    ("[ds] vm/vm.vmdk", "[ds] vm/vm.vmdk"),
    ("guest.img", "guest.img"),
])
def test_vmware_path(path, expected):
    assert p.vmware_path(path) == expected


@pytest.mark.parametrize("name", ["run05-vmx-ssh-port-uri.vx.log", "run08-disk-vdsm-ovirt-flavour.vx.log",
                                  "kill01-sigterm-during-copy.vx.log"])
def test_dialect_hint_changes_nothing_on_2x_logs(name):
    blob = read(name)
    assert feed_all(p.LogParser(2), blob, 65536) == feed_all(p.LogParser(None), blob, 65536)


def test_v1_dialect_hint_understands_v1_lines():
    log = (b"nbdkit: debug: Opening file [ds] vm/vm.vmdk (x)\nCopying disk 1/1 to /x (raw)\n    (25.00/100%)\n")
    assert p.LogParser(1).feed(log) == [p.DiskSource(0, "[ds] vm/vm.vmdk"), p.CopyingDisk(0, 1),
                                        p.DiskProgress(25.0)]


def test_export_size_found_across_reads():
    parser = p.LogParser(2)
    assert parser.feed(b"\texport-size: 4096 (4K)\n") == []
    assert parser.feed(b"\tcontent: data\n") == []
    assert parser.feed(b"\turi: nbd+unix:///?socket=/tmp/v2v.X/in3\n") == [p.DiskSize(3, 4096)]


def test_percent_signs_in_debug_output_are_ignored():
    assert p.LogParser(2).feed(b"mount -o size=20%,mode=0755\nrate 50% done\n100%\n") == []


# -- rhv-upload: imageio's refusal, as virt-v2v 2.2's plugin logs it ----------------------
IMAGEIO_REFUSAL = (
    b"nbdkit: python.3: debug: pwrite count=65536 offset=0\n"
    b"nbdkit: python.1: debug: unexpected response from imageio server:\n"
    b"nbdkit: python.3: debug: zero count=1048576 offset=65536\n"
    b"nbdkit: python.1: debug: could not write sector offset 134217728 size 1069056\n"
    b"nbdkit: python.1: debug: 500: Internal Server Error\n"
    b"nbdkit: python.1: error: /tmp/v2v.K/rhv-upload-plugin.py: pwrite: error: Traceback\n"
    b" TypeError: debug() argument 1 must be str, not bytes\n"
    b"nbdkit: python.4: debug: unexpected response from imageio server:\n"
    b"nbdkit: python.4: debug: could not write sector offset 0 size 4096\n"
    b"nbdkit: python.4: debug: 500: Internal Server Error\n"
    b"nbdkit: python.3: error: read data: NBD_CMD_WRITE: Bad message\n"
    b"virt-v2v: error: nbdcopy command failed, see earlier error messages\n")


@pytest.mark.parametrize("chunk", [1 << 20, 7, 64, 100])
def test_first_imageio_refusal_is_the_upload_failure(chunk):
    events = feed_all(p.LogParser(2), IMAGEIO_REFUSAL, chunk)
    failures = [e for e in events if isinstance(e, p.UploadFailure)]
    assert failures == [p.UploadFailure("imageio answered 500 Internal Server Error to: "
                                        "could not write sector offset 134217728 size 1069056")]
    [err] = [e for e in events if isinstance(e, p.V2vError)]
    # the lines kept for the classification; "NBD_CMD_WRITE: Bad message" only follows up
    # the refusal (wrapper.causes: an echo), so the best cause is the line before it
    assert err.lines[-1] == "nbdkit: python.3: error: read data: NBD_CMD_WRITE: Bad message"
    assert err.cause == "TypeError: debug() argument 1 must be str, not bytes"


def test_imageio_refusal_without_a_status_line_shape():
    data = (b"nbdkit: python.0: debug: unexpected response from imageio server:\n"
            b"nbdkit: python.0: debug: could not flush\n"
            b"nbdkit: python.0: debug: teapot\n")
    assert feed_all(p.LogParser(2), data, 1 << 20) == [p.UploadFailure("could not flush: teapot")]


def test_imageio_refusal_cut_short_reports_nothing():
    data = (b"nbdkit: python.0: debug: unexpected response from imageio server:\n"
            b"nbdkit: python.0: debug: could not write sector offset 0 size 512\n")
    assert feed_all(p.LogParser(2), data, 16) == []
