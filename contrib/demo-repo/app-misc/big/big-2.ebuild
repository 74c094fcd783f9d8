EAPI=8
DESCRIPTION="An upgrade that needs 4 MiB in the root: for full-disk tests"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_compile() {
	head -c 4194304 /dev/urandom > data || die
}

src_install() {
	insinto /usr/share/big
	doins data
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
