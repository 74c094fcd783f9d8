EAPI=8
DESCRIPTION="A package with a USE flag: changing it rebuilds the same version"
SLOT="0"
KEYWORDS="amd64"
IUSE="extra"
S=${WORKDIR}

src_install() {
	insinto /usr/share/tunable
	echo "${PV} $(usex extra extra plain)" > "${T}/version" || die
	doins "${T}/version"
}
