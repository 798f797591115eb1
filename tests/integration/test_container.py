"""The container image for real: built from Debian packages (container/build-image.sh), run
under rootful podman with a real virt-v2v 2.2 conversion from the fake ESXi host on the
host's loopback (``--network host``), the job and the ssh key mounted as files.

* a conversion ends ``finished`` without ``failed`` in the state file on the mounted volume,
  the converted disk lands in the output volume, stderr carries plain one-line log records;
* ``podman stop`` during the copy cancels: exit 2, the state says so, nothing left running;
* a refused job exits 1 with one line and leaves no state file;
* ``inspect --job FILE`` runs the image's virt-v2v-inspector and prints its JSON document.

Skipped, with the reason, when podman cannot run here (``.ci/deps-container.sh`` installs and
configures it).  The first build takes ~5 min (debootstrap + apt in the build); later builds
reuse the cached base image and layers.
"""
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "container" / "build-image.sh"
CONVERSION_TIMEOUT = 1200
KEY_PATH = "/run/secrets/v2v/ssh_key"     # where the Kubernetes manifest mounts it too
JOB_PATH = "/etc/v2v/job.json"


def podman(*args, check=True, timeout=600, **kw):
    return subprocess.run(["podman", *args], check=check, timeout=timeout, text=True,
                          capture_output=True, **kw)


@pytest.fixture(scope="module")
def image():
    if os.geteuid() != 0:
        pytest.skip("rootful podman needs root")
    if not shutil.which("podman") or not shutil.which("debootstrap"):
        pytest.skip("podman/debootstrap not installed (run .ci/deps-container.sh)")
    probe = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if probe.returncode != 0:
        pytest.skip("podman cannot run here: %s" % probe.stderr.strip()[-300:])
    started = time.monotonic()
    built = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    name = built.stdout.split()[-1]
    size = podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip()
    print("image %s: %.0f MB, build %.0f s" % (name, int(size) / 1e6, time.monotonic() - started))
    return name


class Box:
    """The host side of one container run: its volumes and mounted files."""

    def __init__(self, root, fake_esxi, job):
        self.root = root
        root.mkdir()
        self.v2v = root / "v2v"               # -> /v2v: state/ and log/
        self.out = root / "out"               # -> /out: the converted disks
        self.etc = root / "etc"               # -> /etc/v2v (ro): the job, like a ConfigMap
        self.secrets = root / "secrets"       # -> /run/secrets/v2v (ro): like a Secret
        for d in (self.v2v, self.out, self.etc, self.secrets):
            d.mkdir(mode=0o755)
        key = self.secrets / "ssh_key"
        key.write_text(fake_esxi.client_private_key_text)
        key.chmod(0o400)
        keytype, pub = fake_esxi.host_public_key.split()[:2]
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("[127.0.0.1]:%d %s %s\n" % (fake_esxi.port, keytype, pub))
        (self.etc / "job.json").write_text(json.dumps(job))
        self.name = "v2vw-test-%s" % uuid.uuid4().hex[:8]

    def run_args(self, image, *extra):
        return ["run", "--name", self.name, "--network", "host",
                "-e", "LIBGUESTFS_BACKEND_SETTINGS=force_tcg",
                "-v", "%s:/v2v" % self.v2v, "-v", "%s:/out" % self.out,
                "-v", "%s:/etc/v2v:ro" % self.etc, "-v", "%s:/run/secrets/v2v:ro" % self.secrets,
                "-v", "%s:/etc/ssh/ssh_known_hosts:ro" % self.known_hosts,
                *extra, image, "--job", JOB_PATH]

    def state_files(self):
        d = self.v2v / "state"
        return sorted(d.glob("v2v-import-*.state")) if d.is_dir() else []

    def state(self):
        files = self.state_files()
        assert len(files) == 1, files
        return json.loads(files[0].read_text())

    def remove(self):
        podman("rm", "-f", "-i", self.name, check=False)


@pytest.fixture
def boxes(tmp_path):
    made = []

    def make(fake_esxi, job):
        box = Box(tmp_path / ("box%d" % len(made)), fake_esxi, job)
        made.append(box)
        return box
    yield make
    for box in made:
        box.remove()


def ssh_job(fake_esxi, vm, disks):
    return {"vm_name": fake_esxi.vm_uri(vm), "transport_method": "ssh", "ssh_key_file": KEY_PATH,
            "output_dir": "/out", "source_disks": [fake_esxi.vddk_style_path(vm, d) for d in disks]}


def assert_plain_log_lines(stderr):
    lines = stderr.splitlines()
    assert lines, "no log line on stderr"
    assert not any("\x1b" in line or "\r" in line for line in lines), lines[:5]
    assert any(line.endswith("INFO: finished: success") or "finished: failed" in line for line in lines), lines[-5:]


def test_conversion_in_a_container(image, fake_esxi, boxes):
    box = boxes(fake_esxi, ssh_job(fake_esxi, "testvm", ["testvm"]))
    started = time.monotonic()
    done = podman(*box.run_args(image), check=False, timeout=CONVERSION_TIMEOUT)
    took = time.monotonic() - started
    print("conversion in the container: %.0f s" % took)
    assert done.returncode == 0, done.stderr[-3000:]
    state = box.state()
    assert state["finished"] is True and not state.get("failed"), state
    assert state["return_code"] == 0
    assert [d["progress"] for d in state["disks"]] == [100]
    out_disk = box.out / "testvm-sda"
    assert out_disk.stat().st_size == fake_esxi.images["os"].stat().st_size
    assert (box.out / "testvm.xml").is_file()
    # the announcement (stdout) names the files as the container sees them
    answer = json.loads(done.stdout.strip().splitlines()[0])
    assert answer["state_file"].startswith("/v2v/state/")
    assert answer["v2v_log"].startswith("/v2v/log/")
    logs = {p.name for p in (box.v2v / "log").iterdir()}
    assert {Path(answer[k]).name for k in ("v2v_log", "wrapper_log")} <= logs
    assert_plain_log_lines(done.stderr)
    # the key reached virt-v2v only through the agent: never a log, never the volume
    key_body = fake_esxi.client_private_key_text.strip().splitlines()[1]
    for path in (box.v2v / "log").iterdir():
        assert key_body not in path.read_text(errors="replace"), path
    assert [p.name for p in (box.v2v / "state").iterdir()] == [box.state_files()[0].name]


def test_podman_stop_during_the_copy_cancels_cleanly(image, fake_esxi, boxes):
    box = boxes(fake_esxi, ssh_job(fake_esxi, "testvm2", ["testvm2", "testvm2_1"]))
    podman(*box.run_args(image, "-d"))
    deadline = time.monotonic() + CONVERSION_TIMEOUT
    while time.monotonic() < deadline:
        files = box.state_files()
        state = json.loads(files[0].read_text()) if files else {}
        if any(0 < d.get("progress", 0) < 100 for d in state.get("disks", [])) or state.get("finished"):
            break
        time.sleep(0.5)
    assert not state.get("finished"), state
    started = time.monotonic()
    podman("stop", "-t", "60", box.name, timeout=120)
    stop_took = time.monotonic() - started
    print("podman stop during the copy: container gone after %.1f s" % stop_took)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", box.name).stdout.strip()
    logs = podman("logs", box.name).stderr
    assert code == "2", logs[-3000:]
    assert stop_took < 60, "the wrapper outlived podman's grace period: SIGKILLed"
    state = box.state()
    assert state["finished"] is True and state["failed"] is True
    assert "cancelled" in state["last_message"]["message"].lower(), state["last_message"]
    assert "SIGTERM" in state["last_message"]["message"]
    assert "SIGTERM" in logs


def test_inspect_in_a_container(image, fake_esxi, boxes):
    """``IMAGE inspect --job FILE``: the image's virt-v2v-inspector on the job's source, one
    JSON document (the schema's), exit 0, nothing left in the volume."""
    jsonschema = pytest.importorskip("jsonschema")
    box = boxes(fake_esxi, ssh_job(fake_esxi, "testvm", ["testvm"]))
    args = box.run_args(image, "--rm")
    args.insert(args.index("--job"), "inspect")
    started = time.monotonic()
    done = podman(*args, check=False, timeout=CONVERSION_TIMEOUT)
    print("inspection in the container: %.0f s" % (time.monotonic() - started))
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    with open(ROOT / "wrapper" / "schemas" / "inspection.schema.json") as f:
        jsonschema.Draft202012Validator(json.load(f)).validate(doc)
    assert doc["would_run"] and doc["guest"]["distro"] == "debian"
    assert [d["source_disk"] for d in doc["disks"]] == ssh_job(fake_esxi, "testvm", ["testvm"])[
        "source_disks"]
    assert doc["target"]["where"] == "/out" and doc["target"]["enough"] is True
    assert box.state_files() == [] and list(box.out.iterdir()) == []
    state_dir = box.v2v / "state"
    assert not state_dir.is_dir() or list(state_dir.iterdir()) == []


PREFLIGHT_HOST_HALF = """
import tempfile
from wrapper import runner
from wrapper.ovirt import preflight
from wrapper.users import RunUser
user, env = RunUser(0, 0, "root", "/root"), {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
problems = preflight.read_probe(runner.run_as(user, preflight.probe_argv(None), env=env),
                                user, env["PATH"], None)[0]
problems += preflight.read_nbdkit(preflight.run_nbdkit_probe(tempfile.mkdtemp(), user, env,
                                                             runner.run_as), user)
print("problems: %s" % [str(p) for p in problems])
"""


def test_image_has_what_rhv_upload_needs(image):
    """The pre-flight's host half inside the image: its python3 imports the oVirt SDK and
    nbdkit runs a plugin with the imports of virt-v2v's rhv-upload plugin."""
    done = podman("run", "--rm", "--network", "none", "--entrypoint", "python3", image,
                  "-c", PREFLIGHT_HOST_HALF, timeout=120)
    assert done.stdout.strip() == "problems: []", done.stdout + done.stderr


def test_refused_job_exits_1_and_leaves_nothing(image, fake_esxi, boxes):
    job = ssh_job(fake_esxi, "testvm", ["testvm"])
    job["output_format"] = "vmdk"
    box = boxes(fake_esxi, job)
    done = podman(*box.run_args(image, "--rm"), check=False, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "output_format" in lines[0], lines
    assert box.state_files() == []
    assert list(box.out.iterdir()) == []


def test_a_secret_readable_by_others_is_refused(image, fake_esxi, boxes):
    box = boxes(fake_esxi, ssh_job(fake_esxi, "testvm", ["testvm"]))
    (box.secrets / "ssh_key").chmod(0o644)
    done = podman(*box.run_args(image, "--rm"), check=False, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "ssh_key_file" in done.stderr and "0644" in done.stderr, done.stderr
    assert box.state_files() == []


# -- the Kubernetes manifest -----------------------------------------------------------------
MANIFEST = ROOT / "deploy" / "kubernetes" / "conversion-job.yaml"


def assert_valid_job(job):
    """Valid for the job schema, and its secrets only as files."""
    jsonschema = pytest.importorskip("jsonschema")
    with open(ROOT / "wrapper" / "schemas" / "job.schema.json") as f:
        jsonschema.Draft202012Validator(json.load(f)).validate(job)
    assert not {"ssh_key", "vmware_password", "rhv_password"} & set(job), "a secret inline"


def manifest_documents():
    yaml = pytest.importorskip("yaml")
    with open(MANIFEST) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f)}


def pod_from_job_template(docs, image, fake_esxi, box):
    """The Job's pod template as a Pod that ``podman kube play`` (4.3) runs here.

    Kept as written: the container (args, env, resources, mounts), the ConfigMap volume
    (the ConfigMap travels in the same YAML, its job.json pointed at the fake ESXi host).
    Changed, because podman 4.3 cannot do them or this host has no cluster: the image name;
    ``hostNetwork`` (the fake ESXi host is on this host's loopback); the two Secret volumes
    become hostPath files with the modes Kubernetes would give them (podman 4.3 mounts a
    Secret volume without decoding ``data`` and ignores ``defaultMode``); the claims become
    hostPath directories (subPath included)."""
    job = docs["Job"]
    spec = json.loads(json.dumps(job["spec"]["template"]["spec"]))
    spec["hostNetwork"] = True
    container = spec["containers"][0]
    container["image"] = image
    for mount in container["volumeMounts"]:
        mount.pop("subPath", None)
    host_paths = {"credentials": (box.secrets, "Directory"),
                  "known-hosts": (box.known_hosts, "File"),
                  "state": (box.v2v, "Directory"), "output": (box.out, "Directory")}
    for volume in spec["volumes"]:
        if volume["name"] in host_paths:
            path, kind = host_paths[volume["name"]]
            for source in ("secret", "persistentVolumeClaim"):
                volume.pop(source, None)
            volume["hostPath"] = {"path": str(path), "type": kind}
    # the known_hosts mount was a subPath file of the Secret: the file itself now
    configmap = json.loads(json.dumps(docs["ConfigMap"]))
    configmap["data"]["job.json"] = json.dumps(ssh_job(fake_esxi, "testvm", ["testvm"]))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": box.name, "labels": job["spec"]["template"]["metadata"]["labels"]},
           "spec": spec}
    return configmap, pod, "%s-%s" % (box.name, container["name"])


def test_manifests_are_valid_for_kubernetes():
    kv = pytest.importorskip("kubernetes_validate")
    yaml = pytest.importorskip("yaml")
    manifests = sorted(MANIFEST.parent.glob("*.yaml"))
    assert len(manifests) == 2
    for path in manifests:
        for doc in yaml.safe_load_all(path.read_text()):
            for version in ("1.27.0", "1.30.0"):
                kv.validate(doc, version, strict=True)
            if doc["kind"] == "ConfigMap":        # every job in them is a valid job
                for name, text in doc["data"].items():
                    assert_valid_job(json.loads(text))
    docs = manifest_documents()
    assert set(docs) == {"ConfigMap", "Secret", "Job"}
    job = docs["Job"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    # the validator is not a rubber stamp: a misspelt field fails
    bad = json.loads(json.dumps(docs["Job"]))
    bad["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.30.0", strict=True)
    # what the image and the wrapper expect of the mounts
    container = job["template"]["spec"]["containers"][0]
    secret = [v for v in job["template"]["spec"]["volumes"] if v["name"] == "credentials"][0]
    assert secret["secret"]["defaultMode"] == 0o400
    config = json.loads(docs["ConfigMap"]["data"]["job.json"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert config["ssh_key_file"].startswith(mounts["credentials"] + "/")
    assert container["args"] == ["--job", mounts["job"] + "/job.json"]


def test_manifest_pod_runs_under_podman_kube_play(image, fake_esxi, boxes, tmp_path):
    yaml = pytest.importorskip("yaml")
    box = boxes(fake_esxi, {})
    configmap, pod, container = pod_from_job_template(manifest_documents(), image, fake_esxi, box)
    play = tmp_path / "pod.yaml"
    play.write_text(yaml.safe_dump_all([configmap, pod]))
    try:
        podman("kube", "play", str(play), timeout=300)
        code = podman("wait", container, timeout=CONVERSION_TIMEOUT).stdout.strip()
        logs = podman("logs", container).stderr
        assert code == "0", logs[-3000:]
        state = box.state()
        assert state["finished"] is True and not state.get("failed"), state
        assert (box.out / "testvm-sda").stat().st_size == fake_esxi.images["os"].stat().st_size
        assert_plain_log_lines(logs)
    finally:
        podman("kube", "down", str(play), check=False)
