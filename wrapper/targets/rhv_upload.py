"""``rhv_url``: upload through the oVirt API (virt-v2v ``-o rhv-upload``)."""


def output_args(target, paths, allocation):
    args = ["-o", "rhv-upload", "-oc", target.url, "-os", target.storage,
            "-op", paths.rhv_password_file]
    if target.cafile:
        args += ["-oo", "rhv-cafile=%s" % target.cafile]
    return args + ["-oo", "rhv-cluster=%s" % target.cluster, "-oo", "rhv-direct",
                   "-oo", "rhv-verifypeer=%s" % ("false" if target.insecure else "true")]
