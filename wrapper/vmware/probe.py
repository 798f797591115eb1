"""The VDDK pre-flight's child: runs as the run-as user, never as root.

Started by wrapper.vmware.preflight as ``python3 -I -c <boot> <package root>``.
It reads ONE JSON line on stdin -- the question and the password, which so
never appear in argv, the environment or a file -- and writes ONE JSON line
on stdout:

* ``libdir``: which ``libvixDiskLib.so.N`` the library directory holds, as
  this user sees it (``lib64/`` first, as nbdkit's vddk plugin looks);
* ``fingerprint``: the server certificate's SHA-1;
* ``about``: the product (``VMware ESXi 6.5.0``) and ``apiType``;
* ``vms``: the power states of the VMs named ``vm`` (none: it does not exist);
* ``error``: ``{"step", "message", "fault"}`` of the step that failed
  (connect, tls, fingerprint, http, fault at login or later, reply, timeout).

The password is sent only after the certificate's fingerprint matched, and
any text of the server's is cut short and has the password masked before it
is written.
"""
import json
import os
import re
import sys
import time

from wrapper.vmware import endpoint, soap

LIBRARY = re.compile(r"libvixDiskLib\.so\.(\d+)$")
MAX_TEXT = 300
MAX_STATES = 16          # VMs of the same name reported (one is the normal case)


def list_libdir(libdir):
    """{"exists", "libraries": [relative paths], "error"} for ``libdir`` as this user sees it."""
    out = {"exists": os.path.isdir(libdir), "libraries": []}
    for sub in ("lib64", ""):
        where = os.path.join(libdir, sub) if sub else libdir
        try:
            names = sorted(os.listdir(where))
        except OSError as e:
            if sub == "" and out["exists"]:
                out["error"] = e.strerror or str(e)
            continue
        out["libraries"] += [os.path.join(sub, n) if sub else n for n in names if LIBRARY.match(n)]
    return out


def clean(text, password):
    text = str(text)
    if password:
        text = text.replace(password, "******")
    text = "".join(c if c.isprintable() else " " for c in text)
    return text[:MAX_TEXT]


def ask(question, clock=time.monotonic, connection=None):
    """The answer (a dict) to ``question`` (a dict, see the module doc)."""
    answer = {}
    if question.get("libdir"):
        answer["libdir"] = list_libdir(question["libdir"])
    ep = endpoint.parse_uri(question.get("uri"))
    if ep is None:
        return answer
    password = question.get("password") or ""
    client = soap.Client(ep, question.get("fingerprint"), clock() + float(question["timeout"]),
                         clock=clock, connection=connection)
    step = "connect"
    try:
        content = client.retrieve_service_content()
        answer["about"] = {"fullName": clean(content["fullName"], password),
                           "apiType": clean(content["apiType"], password)}
        step = "login"
        client.login(ep.user, password)
        try:
            step = "vms"
            # every text of the server's is masked and bounded, a power state too: a
            # server that got the password at the login could send it back as one
            states = [clean(power, password) for name, power in client.vms()
                      if name == question.get("vm")]
            answer["vms"] = states[:MAX_STATES]
        finally:
            client.logout()
    except soap.SoapError as e:
        answer["error"] = {"step": e.step if e.step != "fault" else step,
                           "message": clean(e.message, password),
                           "fault": None if e.fault is None else clean(e.fault, password)}
    finally:
        seen = getattr(client.conn, "seen", None)
        if seen:
            answer["fingerprint"] = seen
        client.conn.close()
    return answer


def main(stdin=None, stdout=None):
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    password = None
    try:
        question = json.loads(stdin.readline())
        password = question.get("password")
        answer = ask(question)
    except Exception as e:          # the parent reads one line whatever happens
        answer = {"error": {"step": "probe", "message": clean(
            "%s: %s" % (type(e).__name__, e), password)}}
    stdout.write(json.dumps(answer) + "\n")
    stdout.flush()
    return 0
