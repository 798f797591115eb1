"""A stand-in oVirt world: the stand-in engine wired to a real ovirt-imageio
daemon, with one data center holding a storage domain and a cluster.

Shared by the pytest fixtures (tests/ovirt_standin/fixtures.py) and the
command line (``python -m tests.ovirt_standin serve``)."""
import dataclasses
import os
import shutil

from tests.ovirt_standin.engine import Cluster, DataCenter, Pki, StandinEngine, StorageDomain
from tests.ovirt_standin.imageio import ImageioDaemon

DATA_CENTER = "Default"
CLUSTER = "Default"
STORAGE = "data-nfs"


@dataclasses.dataclass
class World:
    pki: Pki
    engine: StandinEngine
    imageio: ImageioDaemon
    data_center: DataCenter
    cluster: Cluster
    storage_domain: StorageDomain
    directory: str

    def stop(self):
        self.engine.stop()
        self.imageio.stop()

    def write_client_files(self, directory, *, owner=None):
        """directory/ca.pem (0644) and directory/password (0600, owned by
        ``owner`` (uid, gid) if given: what virt-v2v's run-as user reads)
        -> (cafile, password_file).  ``directory`` must be new or empty."""
        os.makedirs(directory, mode=0o755, exist_ok=True)
        cafile = os.path.join(directory, "ca.pem")
        shutil.copyfile(self.pki.ca, cafile)
        os.chmod(cafile, 0o644)
        password_file = os.path.join(directory, "password")
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w") as f:
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            f.write(self.engine.password + "\n")
        return cafile, password_file

    def virt_v2v_args(self, cafile, password_file, *, storage=None, cluster=None):
        """virt-v2v's output options for this world, as a conversion host's
        caller would give them (direct transfer, verifying with the CA)."""
        return ["-o", "rhv-upload", "-oc", self.engine.api_url,
                "-os", storage or self.storage_domain.name, "-op", password_file,
                "-oo", "rhv-cafile=" + cafile, "-oo", "rhv-cluster=" + (cluster or self.cluster.name),
                "-oo", "rhv-direct", "-oo", "rhv-verifypeer=true", "-of", "raw"]


def start_world(pki, directory, *, password, storage_type="nfs", write_limit=None,
                python=None):
    """Start imageio (under ``directory``) and the engine; the caller stops
    them with :meth:`World.stop`, also on failure."""
    kw = {"python": python} if python else {}
    imageio = ImageioDaemon(pki, os.path.join(directory, "imageio"),
                            write_limit=write_limit, **kw)
    imageio.start()
    engine = StandinEngine(pki, password=password, imageio=imageio)
    try:
        dc = engine.add_data_center(DATA_CENTER)
        sd = engine.add_storage_domain(STORAGE, storage_type, data_center=dc)
        cluster = engine.add_cluster(CLUSTER, dc)
        engine.start()
    except BaseException:
        imageio.stop()
        raise
    return World(pki, engine, imageio, dc, cluster, sd, directory)
