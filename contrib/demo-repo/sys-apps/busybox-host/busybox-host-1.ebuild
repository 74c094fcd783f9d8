# A shell and tools for the demo system: the host's static busybox, so that
# systemd-nspawn has something to run without a compiler toolchain.
EAPI=8
DESCRIPTION="The host's static busybox, as the demo system's userland"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	exeinto /bin
	doexe /bin/busybox
	dosym busybox /bin/sh
}
