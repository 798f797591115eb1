"""VDDK jobs that cannot work, through the wrapper against the VDDK test world (issue 22;
docs/contract.md §8): each ends ``finished`` + ``failed`` (or, once a pre-flight refuses it,
as one line before anything starts), leaves no process, secret file or output behind, and
the password appears nowhere. ~1-10 s each; the empty libdir ~30 s (virt-v2v waits that
long for nbdkit). The mid-copy read error and SIGTERM are in test_vddk_real.py.

``last_message`` names the real cause in one sentence, with a stable code (wrapper.causes).
"""

import os

import pytest

from tests.integration.vddk import world as W
from tests.integration.vddkrun import VddkRun, vddk_job

pytestmark = pytest.mark.integration

WRONG_THUMBPRINT = ":".join(["AB"] * 20)

# name: (Standin options, job changes, libdir: "standin" / None (missing) / "empty")
CASES = {
    "wrong-password": ({}, {"vmware_password": "not-the-password"}, "standin"),
    "wrong-thumbprint": ({}, {"vmware_fingerprint": WRONG_THUMBPRINT}, "standin"),
    "vddk-refuses-password": ({"library_password": "only-vddk-knows"}, {}, "standin"),
    "vm-not-found": ({}, {"vm_name": "novm"}, "standin"),
    "vm-powered-on": ({"powered_on": ["testvm"]}, {}, "standin"),
    "libdir-missing": ({}, {}, None),
    "libdir-empty": ({}, {}, "empty"),
}

# what the one sentence must name (lower case), per case
NAMES = {
    "wrong-password": ("password",),
    "wrong-thumbprint": ("thumbprint",),
    "vddk-refuses-password": ("password",),
    "vm-not-found": ("novm",),
    "vm-powered-on": ("testvm", "shut"),
    "libdir-missing": ("does not point to a directory",),    # and the libdir: missing_libdir()
    "libdir-empty": ("libvixdisklib.so",),
}


class Outcome:
    def __init__(self, run, sim, job, state=None, refused=None):
        self.run, self.sim, self.job, self.state, self.refused = run, sim, job, state, refused

    def message(self):
        return self.refused if self.refused is not None else self.state["last_message"]["message"]


@pytest.fixture(scope="module")
def outcomes(vddk_plugin, vddk_run_as, guest_images):
    from tests.integration.fx_vddk import default_vms
    done, cleanup = {}, []

    def get(name):
        if name in done:
            return done[name]
        opts, change, libdir = CASES[name]
        sim = W.Standin(vddk_plugin, default_vms(), **opts)
        cleanup.append(sim)
        sim.start()
        if libdir == "empty":
            libdir = os.path.join(str(sim.root), "empty-libdir")
            os.mkdir(libdir)
        elif libdir == "standin":
            libdir = sim.libdir
        run = VddkRun(name, sim, vddk_run_as, libdir=libdir)
        cleanup.append(run)
        job = vddk_job(sim, "testvm", output_dir=run.out, daemonize=False)
        job.update(change)
        if run.start(job) is None:
            done[name] = Outcome(run, sim, job, refused=run.stderr().strip())
        else:
            done[name] = Outcome(run, sim, job, state=run.wait_finished(timeout=300))
            run.print_sequence()
        return done[name]

    yield get
    for thing in reversed(cleanup):
        thing.cleanup() if isinstance(thing, VddkRun) else thing.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_vddk_failure_is_clean(outcomes, name):
    o = outcomes(name)
    run, secret = o.run, o.job["vmware_password"]
    if o.refused is not None:            # a pre-flight refused it: one line, nothing started
        assert run.proc.returncode == 1 and len(o.refused.splitlines()) == 1, o.refused
        assert "Traceback" not in o.refused and os.listdir(run.state_dir) == []
    else:
        s = o.state
        assert s["finished"] is True and s["failed"] is True and s["return_code"] != 0, s
        assert run.proc.returncode == 2, run.stderr()[-2000:]       # foreground: failed (§2)
        assert isinstance(s["last_message"]["message"], str)
        assert [n for n in os.listdir(run.state_dir) if n.startswith("v2v-wrapper-")] == []
    assert run.wait_no_processes() == {}
    assert os.listdir(run.out) == []                    # nothing was copied
    assert run.secret_hits(secret) == []
    assert run.secret_hits(o.sim.password) == []


def missing_libdir():
    """The libdir a "libdir-missing" run names (tests/integration/fx_vddk.with_libdir): the
    ``--vddk-libdir`` setting's where the wrapper has it, else the fixed default."""
    from tests.integration.fx_vddk import wrapper_has_libdir_setting
    return ("/nonexistent/vddk-libdir" if wrapper_has_libdir_setting()
            else "/opt/vmware-vix-disklib-distrib")


@pytest.mark.parametrize("name", list(CASES))
def test_vddk_failure_names_its_cause(outcomes, name):
    o = outcomes(name)
    msg = o.message()
    assert len(msg.splitlines()) == 1 and msg.count(". ") <= 1, msg
    print("%s: %r %s" % (name, msg, (o.state or {}).get("last_message", {}).get("code")))
    for word in NAMES[name]:
        assert word in msg.lower(), msg
    if name == "libdir-missing":
        assert missing_libdir() in msg, msg
    if o.refused is None:
        assert o.state["last_message"].get("code"), o.state["last_message"]
