"""virt-v2v-wrapper: run virt-v2v conversions unattended on a conversion host."""

__version__ = "2.0.0"
