"""gnspawn: Gentoo containers for systemd-nspawn on ZFS, built and updated as D-Bus jobs."""

__version__ = "0.1.0"
