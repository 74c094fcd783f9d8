EAPI=8
DESCRIPTION="An upgrade whose compile prints 200,000 lines: for log throughput"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_compile() {
	seq -f "cc -c -O2 -o obj/%06g.o" 200000 || die
}

src_install() {
	insinto /usr/share/chatty
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
