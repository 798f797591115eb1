"""wrapper.vmware: the VDDK pre-flight, against fakes.

The SOAP side runs against tests/fake_vsphere.py (a standard-library https
server answering ESXi's and vCenter's calls); nbdkit is a fake program that
answers ``nbdkit vddk libdir=DIR --dump-plugin`` the way nbdkit 1.42's vddk
plugin does (``vddk_library_version=N`` only when a library loads).  The probe
runs as a real child process (as root and as ``nobody``), its password on stdin.
The real VDDK world's tests are in tests/integration/test_vddk_preflight_real.py.
"""
import json
from xml.sax.saxutils import escape
import os
import pathlib
import pwd
import shutil
import stat
import sys
import tempfile
import textwrap
import time

import pytest

from tests import wrapperrun as wr
from tests.fake_vsphere import FakeVSphere, closed_port, make_certificate
from tests.fakes import make_fake_v2v
from wrapper import runner
from wrapper.config import VddkSource
from wrapper.errors import JobError
from wrapper.runner import Result
from wrapper.security.secrets import Secret
from wrapper.settings import Settings
from wrapper.users import RunUser
from wrapper.vmware import endpoint, preflight, probe, soap

ROOT_USER = RunUser(os.geteuid(), os.getegid(), "root", "/root")
PASSWORD = "s3cr&t<pw>"

FAKE_NBDKIT = textwrap.dedent("""\
    import os, sys
    args = sys.argv[1:]
    with open(os.environ.get("FAKE_NBDKIT_RECORD", "/dev/null"), "a") as f:
        f.write(repr(args) + "\\n")
    if os.environ.get("FAKE_NBDKIT_MODE") == "noplugin":
        sys.exit("nbdkit: error: cannot open plugin 'vddk': /usr/lib/x86_64-linux-gnu/nbdkit/"
                 "plugins/nbdkit-vddk-plugin.so: cannot open shared object file: No such file")
    libdir = [a[len("libdir="):] for a in args if a.startswith("libdir=")][0]
    if not os.path.isdir(libdir):
        sys.exit("nbdkit: error: realpath: %s: No such file or directory" % libdir)
    print("name=vddk\\nversion=1.42.3\\nvddk_default_libdir=/usr/lib/vmware-vix-disklib")
    for n in (8, 7, 6):
        p = os.path.join(libdir, "lib64", "libvixDiskLib.so.%d" % n)
        try:
            with open(p, "rb") as f:
                ok = f.read(4) == b"\\x7fELF"
        except OSError:
            ok = False
        if ok:
            print("vddk_library_version=%d\\nvddk_dll=%s" % (n, p))
            break
""")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_certificate(str(tmp_path_factory.mktemp("cert")))


@pytest.fixture
def server(tmp_path, cert):
    with FakeVSphere(str(tmp_path), vms={"testvm": "poweredOff", "busy": "poweredOn",
                                         "nap": "suspended"}, password=PASSWORD, cert=cert) as s:
        yield s


def make_bin(directory, mode=None):
    """A bin directory (world-readable: ``nobody`` runs from it) with the fake nbdkit."""
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    exe = os.path.join(directory, "nbdkit")
    with open(exe, "w") as f:
        # the system's python3: any run-as user may run it (the venv's may be under /root)
        f.write("#!%s\n%s" % (shutil.which("python3", path="/usr/bin:/bin") or sys.executable,
                               FAKE_NBDKIT))
    os.chmod(exe, 0o755)
    return directory


def make_libdir(root, name="libvixDiskLib.so.8", content=b"\x7fELF fake"):
    libdir = os.path.join(root, "vddk")
    os.makedirs(os.path.join(libdir, "lib64"), exist_ok=True)
    for d in (root, libdir, os.path.join(libdir, "lib64")):
        os.chmod(d, 0o755)
    if name:
        path = os.path.join(libdir, "lib64", name)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, 0o644)
    return libdir


def source(server, fingerprint=None, password=PASSWORD, uri=None):
    return VddkSource(uri or server.uri(), Secret(password), fingerprint or server.fingerprint)


def env_for(bindir, **extra):
    return dict({"PATH": "%s:/usr/bin:/bin" % bindir, "LANG": "C"}, **extra)


# -- endpoint (pure) -------------------------------------------------------------
def test_uri_gives_host_port_and_user():
    assert endpoint.parse_uri("esx://root@10.2.0.20?no_verify=1") == \
        endpoint.Endpoint("esx", "10.2.0.20", 443, "root", "")
    assert endpoint.parse_uri("vpx://administrator%40vsphere.local@vc.example:8443/DC/cl/h1?no_verify=1") \
        == endpoint.Endpoint("vpx", "vc.example", 8443, "administrator@vsphere.local", "DC/cl/h1")
    assert endpoint.parse_uri("ESX://[fd00::1]/").where() == "[fd00::1]:443"
    assert endpoint.parse_uri("vpx://vc/DC/h").user == "administrator"
    assert endpoint.parse_uri("esx://h").user == "root"
    for other in ("qemu:///system", "esx:///", "ssh://root@h/x.vmx", "esx://h:99999", "", None):
        assert endpoint.parse_uri(other) is None


def test_fingerprints_compare_whatever_their_case_and_colons(cert):
    der = __import__("ssl").PEM_cert_to_DER_cert(open(cert[0]).read())
    fp = cert[2]
    for form in (fp, fp.lower(), fp.replace(":", ""), fp.lower().replace(":", "")):
        assert endpoint.matches(form, der)
    sha256 = endpoint.of(der, "sha256")
    assert endpoint.matches(sha256, der) and len(sha256) == 95
    assert not endpoint.matches(fp[:-2] + ("00" if not fp.endswith("00") else "11"), der)
    assert not endpoint.matches("AB:CD", der) and not endpoint.matches(None, der)
    assert endpoint.normalize("zz" * 20) is None


# -- soap (pure) ------------------------------------------------------------------
def test_replies_are_read_and_faults_named():
    env = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s'
           '</soapenv:Body></soapenv:Envelope>')
    fault = soap.parse((env % ('<soapenv:Fault><faultstring>Cannot complete login.</faultstring>'
                               '<detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"/>'
                               '</detail></soapenv:Fault>')).encode())
    assert soap.fault_of(fault) == ("Cannot complete login.", "InvalidLogin")
    page = soap.parse((env % ('<R xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-1'
                              '</obj><propSet><name>name</name><val>a&amp;b</val></propSet><propSet>'
                              '<name>runtime.powerState</name><val>poweredOn</val></propSet></objects>'
                              '<token>7</token></returnval></R>')).encode())
    assert soap.fault_of(page) is None
    assert soap.vm_objects(page) == ([("a&b", "poweredOn")], "7")
    assert soap.session_cookie('vmware_soap_session="52a"; Path=/; HttpOnly') == 'vmware_soap_session="52a"'
    assert soap.session_cookie("other=1") is None
    with pytest.raises(soap.SoapError, match="DOCTYPE"):
        soap.parse(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    with pytest.raises(soap.SoapError, match="not XML"):
        soap.parse(b"<html>")
    with pytest.raises(soap.SoapError, match="not a SOAP envelope"):
        soap.parse(b"<x/>")


def test_requests_escape_what_they_carry():
    body = soap.call("Login", ("SessionManager", "ha-sessionmgr"), soap.element("userName", "root"),
                     soap.element("password", "<&>")).decode()
    assert '<_this type="SessionManager">ha-sessionmgr</_this>' in body
    assert "<password>&lt;&amp;&gt;</password>" in body


# -- the probe against the fake server ----------------------------------------
def ask(server, **kw):
    q = dict(uri=server.uri(), fingerprint=server.fingerprint, vm="testvm", password=PASSWORD,
             timeout=5)
    q.update(kw)
    return probe.ask(q)


def test_probe_good_vm_on_esxi(server):
    answer = ask(server)
    assert answer["vms"] == ["poweredOff"] and "error" not in answer
    assert answer["fingerprint"] == server.fingerprint
    assert answer["about"]["apiType"] == "HostAgent"
    assert server.calls == ["RetrieveServiceContent", "Login", "CreateContainerView",
                            "RetrievePropertiesEx", "Logout"]


def test_probe_pages_through_a_vcenter(tmp_path, cert):
    vms = {"vm%d" % i: "poweredOn" for i in range(7)}
    vms["wanted"] = "poweredOff"
    with FakeVSphere(str(tmp_path), vms=vms, vcenter=True, page=3, user="administrator",
                     password=PASSWORD, cert=cert) as s:
        answer = ask(s, uri=s.uri("vpx", user="administrator", path="DC0/DC0_H0"), vm="wanted")
        assert answer["vms"] == ["poweredOff"] and answer["about"]["apiType"] == "VirtualCenter"
        assert s.calls.count("ContinueRetrievePropertiesEx") == 2


def test_wrong_fingerprint_never_sends_the_password(server):
    answer = ask(server, fingerprint="AA:" * 19 + "AA")
    assert answer["error"]["step"] == "fingerprint"
    assert server.fingerprint in answer["error"]["message"]
    assert server.calls == [] and server.passwords == []


def test_wrong_password_is_a_login_fault_and_never_echoed(server):
    answer = ask(server, password="wrong-" + PASSWORD)
    assert answer["error"]["step"] == "login" and answer["error"]["fault"] == "InvalidLogin"
    assert "incorrect user name or password" in answer["error"]["message"]
    assert PASSWORD not in json.dumps(answer)


def test_a_server_that_echoes_the_password_gets_it_masked(tmp_path, cert):
    """Security review: a server that got the password at the login sent it back
    as a VM's power state (and as its product name): every server text is masked."""
    with FakeVSphere(str(tmp_path), vms={"testvm": "on-" + escape(PASSWORD)},
                     password=PASSWORD, cert=cert) as s:
        answer = ask(s)
    assert PASSWORD not in json.dumps(answer)
    assert answer["vms"] == ["on-******"]


def test_many_vms_of_one_name_are_reported_within_a_bound(tmp_path, cert):
    class Many(FakeVSphere):
        def answer(self, method, body, cookie):
            code, text, extra = super().answer(method, body, cookie)
            if method == "RetrievePropertiesEx":
                one = text[text.index("<objects>"):text.index("</objects>") + len("</objects>")]
                text = text.replace(one, one * 500)
            return code, text, extra
    with Many(str(tmp_path), password=PASSWORD, cert=cert) as s:
        answer = ask(s)
    assert answer["vms"] == ["poweredOff"] * probe.MAX_STATES


def test_probe_server_failures(tmp_path, cert):
    port = closed_port()
    answer = probe.ask(dict(uri="esx://root@127.0.0.1:%d/" % port, fingerprint=cert[2], vm="v",
                            password="x", timeout=3))
    assert answer["error"]["step"] == "connect" and "fingerprint" not in answer
    for mode, step in (("http404", "http"), ("plain", "tls")):
        with FakeVSphere(str(tmp_path), mode=mode, cert=cert) as s:
            assert ask(s)["error"]["step"] == step, mode
    with FakeVSphere(str(tmp_path), mode="slow", cert=cert) as s:
        t0 = time.monotonic()
        answer = ask(s, timeout=0.5)
        assert answer["error"]["step"] == "timeout" and time.monotonic() - t0 < 5


def test_probe_lists_the_library_directory(tmp_path):
    libdir = make_libdir(str(tmp_path), "libvixDiskLib.so.7")
    assert probe.list_libdir(libdir) == {"exists": True, "libraries": ["lib64/libvixDiskLib.so.7"]}
    assert probe.list_libdir(str(tmp_path / "none")) == {"exists": False, "libraries": []}


def test_probe_main_reads_one_line_and_answers_one(server):
    import io
    out = io.StringIO()
    q = dict(uri=server.uri(), fingerprint=server.fingerprint, vm="busy", password=PASSWORD, timeout=5)
    probe.main(io.StringIO(json.dumps(q) + "\n"), out)
    assert json.loads(out.getvalue())["vms"] == ["poweredOn"]
    out = io.StringIO()
    probe.main(io.StringIO("not json\n"), out)
    assert json.loads(out.getvalue())["error"]["step"] == "probe"


# -- reading nbdkit's answer (pure) -------------------------------------------------
def test_nbdkit_results_name_the_cause():
    def res(rc, out="", err=""):
        return Result(("nbdkit",), rc, out, err)
    listing = {"exists": True, "libraries": []}
    [p], _ = preflight.read_nbdkit(res(127), ROOT_USER, "/opt/v", listing, 10)
    assert "nbdkit is not installed" in str(p)
    [p], _ = preflight.read_nbdkit(res(1, err="nbdkit: error: cannot open plugin 'vddk': x.so: cannot "
                                               "open shared object file"), ROOT_USER, "/opt/v", listing, 10)
    assert "vddk plugin (nbdkit-plugin-vddk) is not installed" in str(p)
    [p], _ = preflight.read_nbdkit(res(1, err="nbdkit: error: realpath: /opt/v: No such file"),
                                   ROOT_USER, "/opt/v", {"exists": False, "libraries": []}, 10)
    assert p.key == "--vddk-libdir" and "/opt/v does not exist" in str(p)
    [p], _ = preflight.read_nbdkit(res(0, "name=vddk\n"), ROOT_USER, "/opt/v", listing, 10)
    assert "no libvixDiskLib.so.N in /opt/v/lib64" in str(p) and ".so.8, .7 or .6" in str(p)
    [p], _ = preflight.read_nbdkit(res(0, "name=vddk\n"), ROOT_USER, "/opt/v",
                                   {"exists": True, "libraries": ["lib64/libvixDiskLib.so.8"]}, 10)
    assert "holds lib64/libvixDiskLib.so.8 but nbdkit's vddk plugin loads none" in str(p)
    problems, fields = preflight.read_nbdkit(
        res(0, "name=vddk\nvddk_library_version=8\nvddk_dll=/opt/v/lib64/libvixDiskLib.so.8\n"),
        ROOT_USER, "/opt/v", listing, 10)
    assert problems == [] and fields["vddk_library_version"] == "8"


# -- the whole pre-flight, children and all ------------------------------------------
def check(tmp_path, src, vm="testvm", libdir=None, user=ROOT_USER, mode=None, timeout=10):
    bindir = make_bin(str(tmp_path / "bin"))
    libdir = libdir or make_libdir(str(tmp_path / "lib"))
    record = str(tmp_path / "nbdkit.record")
    open(record, "a").close()
    os.chmod(record, 0o666)             # the fake nbdkit may run as nobody
    calls = []

    def run_as(u, argv, **kw):
        calls.append((argv, kw.get("env")))
        return runner.run_as(u, argv, **kw)
    env = env_for(bindir, FAKE_NBDKIT_RECORD=record, **({"FAKE_NBDKIT_MODE": mode} if mode else {}))
    try:
        return preflight.check(src, vm, libdir, user, env, timeout, run_as=run_as)
    finally:
        for argv, child_env in calls:       # the password went on stdin only
            assert not any(PASSWORD in a for a in argv) and PASSWORD not in repr(child_env)


def refused(tmp_path, src, **kw):
    with pytest.raises(JobError) as e:
        check(tmp_path, src, **kw)
    text = str(e.value)
    assert "\n" not in text and PASSWORD not in text
    return e.value


def test_good_job_passes(tmp_path, server):
    facts = check(tmp_path, source(server))
    assert facts["version"] == "8" and facts["fingerprint"] == server.fingerprint
    assert facts["server"].startswith("VMware ESXi")
    assert server.calls[-1] == "Logout"


def test_each_bad_job_is_refused_with_its_line(tmp_path, server):
    e = refused(tmp_path, source(server, fingerprint=server.fingerprint.lower().replace("a", "b")
                                 if "A" in server.fingerprint else "AA:" * 19 + "AA"))
    assert e.key == "vmware_fingerprint" and "password was not sent" in e.message
    assert e.code == "thumbprint_mismatch"
    assert server.fingerprint in e.message and server.passwords == []
    e = refused(tmp_path, source(server, password="nope"))
    assert e.key == "vmware_password" and "login as root to ESXi host 127.0.0.1:%d failed" % server.port \
        in e.message and "incorrect user name or password" in e.message
    assert e.code == "source_login_refused"
    e = refused(tmp_path, source(server), vm="ghost")
    assert e.key == "vm_name" and "no VM named 'ghost'" in e.message and e.code == "vm_not_found"
    e = refused(tmp_path, source(server), vm="busy")
    assert e.key == "vm_name" and "is poweredOn" in e.message and "shut it down" in e.message
    assert e.code == "vm_powered_on"
    e = refused(tmp_path, source(server), vm="nap")
    assert "is suspended" in e.message
    e = refused(tmp_path, source(server), libdir=make_libdir(str(tmp_path / "empty"), name=None))
    assert e.key == "--vddk-libdir" and "no libvixDiskLib.so.N in" in e.message
    assert e.code == "vddk_library_missing"
    e = refused(tmp_path, source(server), libdir=str(tmp_path / "nowhere"))
    assert e.key == "--vddk-libdir" and "does not exist" in e.message
    e = refused(tmp_path, source(server), mode="noplugin")
    assert "nbdkit-plugin-vddk) is not installed" in e.message and e.code is None


def test_problems_are_one_line_first_cause_first(tmp_path, server):
    e = refused(tmp_path, source(server, password="nope"), libdir=make_libdir(str(tmp_path / "e"), name=None))
    assert e.key == "--vddk-libdir" and "; also vmware_password: login as root" in e.message
    assert [(p.key, p.code) for p in e.problems] == [
        ("--vddk-libdir", "vddk_library_missing"), ("vmware_password", "source_login_refused")]


def test_unreachable_server_refused_within_the_bound(tmp_path, cert):
    src = VddkSource("esx://root@127.0.0.1:%d/" % closed_port(), Secret(PASSWORD), cert[2])
    e = refused(tmp_path, src)
    assert e.key == "vmware_uri" and "cannot connect to ESXi host 127.0.0.1" in e.message
    with FakeVSphere(str(tmp_path), mode="slow", cert=cert) as s:
        t0 = time.monotonic()
        e = refused(tmp_path, source(s), timeout=2)
        assert e.key == "vmware_uri" and time.monotonic() - t0 < 10


def _others_can_reach(path):
    """Whether every directory from / down to ``path`` lets others search it."""
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def test_probe_runs_as_the_run_as_user(tmp_path, server):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the probe as another user")
    if not _others_can_reach(os.path.dirname(os.path.dirname(probe.__file__))):
        pytest.skip("nobody cannot read this checkout (an rpmbuild directory): the probe "
                    "could not run as nobody")
    nobody = pwd.getpwnam("nobody")
    user = RunUser(nobody.pw_uid, nobody.pw_gid, "nobody", "/")
    top = tempfile.mkdtemp(prefix="v2vw-vddkcheck-", dir="/var/tmp")    # pytest's is root's only
    try:
        os.chmod(top, 0o755)
        base = pathlib.Path(top)
        facts = check(base, source(server), user=user)
        assert facts["version"] == "8"
        # a library only root can read is one nobody cannot load
        libdir = make_libdir(str(base / "private"))
        os.chmod(os.path.join(libdir, "lib64", "libvixDiskLib.so.8"), stat.S_IRUSR)
        e = refused(base, source(server), libdir=libdir, user=user)
        assert "holds lib64/libvixDiskLib.so.8 but nbdkit's vddk plugin loads none of them as " \
               "nobody" in e.message
    finally:
        shutil.rmtree(top)


def test_a_probe_that_cannot_run_refuses_nothing(tmp_path, server, caplog):
    """No Python the run-as user may run (or the wrapper's code unreadable to it): the
    server checks are left to virt-v2v, with a warning; the library is still checked."""
    def run_as(u, argv, **kw):
        if argv[0] != "nbdkit":
            return Result(tuple(argv), 127, "", "Permission denied")
        return runner.run_as(u, argv, **kw)
    bindir = make_bin(str(tmp_path / "bin"))
    calls = []
    facts = preflight.check(source(server, password="wrong"), "ghost", make_libdir(str(tmp_path)),
                            ROOT_USER, env_for(bindir), 10,
                            run_as=lambda *a, **kw: calls.append(a[1][0]) or run_as(*a, **kw))
    assert facts["version"] == "8" and server.calls == []
    assert calls.count("nbdkit") == 1 and len(calls) == 3        # the wrapper's Python, then python3
    assert "the VMware host is left to virt-v2v" in caplog.text
    with pytest.raises(JobError, match="no libvixDiskLib.so.N"):
        preflight.check(source(server), "testvm", make_libdir(str(tmp_path / "e"), name=None),
                        ROOT_USER, env_for(bindir), 10, run_as=run_as)


def test_other_uri_schemes_skip_the_server_checks(tmp_path):
    src = VddkSource("qemu+ssh://root@h/system", Secret(PASSWORD), "AB:" * 19 + "AB")
    assert check(tmp_path, src)["version"] == "8"


# -- settings -----------------------------------------------------------------------
def test_settings_turn_it_off_or_bound_it(tmp_path):
    def never(*a, **kw):
        raise AssertionError("ran %r" % (a,))
    config = type("C", (), {"source": None, "vm_name": "v"})
    assert preflight.check_job(config, Settings(vddk_preflight="off"), ROOT_USER, {}, run_as=never) is None
    for bad in (dict(vddk_preflight="maybe"), dict(vddk_preflight_timeout="0"),
                dict(vddk_preflight_timeout="soon")):
        with pytest.raises(JobError, match="VIRT_V2V_WRAPPER_VDDK_PREFLIGHT"):
            preflight.check_job(config, Settings(**bad), ROOT_USER, {}, run_as=never)
    assert preflight.from_settings(Settings()) == (True, 10.0)


# -- through the command line ----------------------------------------------------------
def cli_run(tmp_path, server, **job):
    dirs = wr.WrapperDirs(tmp_path)
    exe = make_fake_v2v(dirs.bin, record=os.path.join(dirs.root, "record.json"),
                        log=os.path.join(os.path.dirname(__file__), "data",
                                         "run05-vmx-ssh-port-uri.vx.log"))
    make_bin(dirs.bin)
    libdir = make_libdir(str(tmp_path / "lib"))
    j = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": server.uri(),
         "vmware_password": PASSWORD, "vmware_fingerprint": server.fingerprint,
         "output_dir": dirs.out, "daemonize": False}
    j.update(job)
    env = wr.env(VIRT_V2V_WRAPPER_VDDK_PREFLIGHT="on", VIRT_V2V_WRAPPER_VDDK_LIBDIR=libdir,
                 PATH="%s:%s" % (dirs.bin, os.environ.get("PATH", "/usr/bin:/bin")),
                 VIRT_V2V_WRAPPER_SYSTEMD_MARKER=str(tmp_path / "no-systemd"),
                 VIRT_V2V_WRAPPER_LOCK_DIR=str(tmp_path / "lock"))
    return dirs, wr.run(dirs.args(exe), j, env=env)


def test_cli_refuses_a_bad_vddk_job_before_the_answer(tmp_path, server):
    dirs, r = cli_run(tmp_path, server, vm_name="busy")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "vm_name: the VM 'busy' on ESXi host" in r.stderr
    assert os.listdir(dirs.state) == [] and wr.secret_dirs(dirs.state) == []
    assert not any(n.endswith((".log",)) and "wrapper" not in n for n in os.listdir(dirs.logs))
    wrapper_log = [n for n in os.listdir(dirs.logs) if n.endswith("-wrapper.log")]
    text = open(os.path.join(dirs.logs, wrapper_log[0])).read()
    assert "VDDK pre-flight took" in text and PASSWORD not in text


def test_cli_accepts_a_good_vddk_job_and_gives_virt_v2v_the_libdir(tmp_path, server):
    dirs, r = cli_run(tmp_path, server)
    assert r.returncode == 0, r.stderr
    assert server.calls[-1] == "Logout"
    record = json.load(open(os.path.join(dirs.root, "record.json")))
    assert "vddk-libdir=%s" % (tmp_path / "lib" / "vddk") in record["argv"]
