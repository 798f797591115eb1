"""One wrapper run inside a virt-v2v world (tests/integration/worlds.py), shared by the
version matrix and the parallel-copy tests: the run's directories are bound at the same
path inside, the wrapper source read-only, and outbound limits find no cgroup hierarchy
(the host's qdiscs and firewall are not the test's).  The host world runs the wrapper
with the test's own Python."""
import json
import os
import subprocess
import time

from tests import wrapperrun as wr

try:
    from . import worlds
    from .test_real_conversions import MARKER_VAR, Run
except ImportError:  # pragma: no cover - depends on how pytest was started
    import worlds
    from test_real_conversions import MARKER_VAR, Run


class WorldRun(Run):
    """One wrapper run in ``world`` (the host when ``world.is_host``)."""

    def __init__(self, name, world):
        super().__init__("%s-%s" % (world.name, name))
        self.world = world
        if not world.is_host:
            os.chown(self.out, worlds.RUN_AS[1], worlds.RUN_AS[2])   # virt-v2v writes as vdsm

    def env(self, v2v_env):
        no_cgroups = os.path.join(self.root, "no-cgroups")
        os.makedirs(no_cgroups, exist_ok=True)
        extra = dict(v2v_env, VIRT_V2V_WRAPPER_CGROUP_ROOT=no_cgroups, PYTHONDONTWRITEBYTECODE="1",
                     **{MARKER_VAR: self.marker})
        return wr.env(**extra) if self.world.is_host else dict(extra, PYTHONPATH=wr.ROOT)

    def start(self, job, v2v_env):
        self.t0 = time.monotonic()
        self.stderr_path = os.path.join(self.root, "stderr.txt")
        python = wr.wrapper_cmd()[0] if self.world.is_host else "python3"
        with open(self.stderr_path, "w") as err:
            self.proc = self.world.popen(
                [python, "-m", "wrapper"] + self.args(), binds=[self.root], ro_binds=[wr.ROOT],
                cwd=wr.ROOT, env=self.env(v2v_env), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, universal_newlines=True)
        self.proc.stdin.write(json.dumps(job))
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        assert line, "wrapper printed nothing; stderr: %s" % self.stderr()
        self.announced = json.loads(line)
        return self.announced

    def cleanup(self):
        super().cleanup()
        self.world.forget_mountpoints([self.root, wr.ROOT])
