EAPI=8
DESCRIPTION="Small; its upgrade installs 4 MiB"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/big
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
