# Fails to build while files/fail exists beside this ebuild: a build step that fails once.
EAPI=8
DESCRIPTION="A package whose build fails on demand"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_compile() {
	[[ -e ${FILESDIR}/fail ]] && die "flaky on purpose (${FILESDIR}/fail exists)"
	echo ok > flaky.txt || die
}

src_install() {
	insinto /usr/share/flaky
	doins flaky.txt
}
