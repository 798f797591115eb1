"""virt-v2v-wrapper: run virt-v2v conversions unattended on a conversion host."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(HERE, "wrapper", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


setup(
    name="virt-v2v-wrapper",
    version=version(),
    description="Run virt-v2v conversions unattended: JSON job in, progress state file out",
    long_description=readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["wrapper", "wrapper.*"]),
    package_data={"wrapper": ["schemas/*.json", "shims/nbdcopy"]},
    data_files=[("share/man/man1", ["docs/virt-v2v-wrapper.1"])],
    install_requires=[],
    extras_require={"ovirt": ["ovirt-engine-sdk-python>=4.4"]},
    entry_points={"console_scripts": [
        "virt-v2v-wrapper = wrapper.cli:console_main",
        "virt-v2v-wrapper.py = wrapper.cli:console_main",
    ]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3 :: Only",
        "Operating System :: POSIX :: Linux",
        "Environment :: Console",
    ],
)
