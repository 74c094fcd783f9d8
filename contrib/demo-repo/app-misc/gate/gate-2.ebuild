EAPI=8
DESCRIPTION="An upgrade that waits in pkg_preinst or pkg_postinst while GNSPAWN_DEMO_GATE says so"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

# GNSPAWN_DEMO_GATE names a FIFO, GNSPAWN_DEMO_GATE_PHASE a phase (preinst or postinst).
# In that phase the package appends the phase's name to ${GNSPAWN_DEMO_GATE}.reached and
# then waits for a line on the FIFO: whoever reads the file knows where the merge stands.
gate() {
	[[ -n ${GNSPAWN_DEMO_GATE} && ${GNSPAWN_DEMO_GATE_PHASE} == "$1" ]] || return 0
	echo "$1" >> "${GNSPAWN_DEMO_GATE}.reached" || die
	read -r < "${GNSPAWN_DEMO_GATE}" || die
}

src_install() {
	insinto /usr/share/gate
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
	# The environment saved now goes into the binary package and would override the
	# gate settings of the merge that installs it.
	unset GNSPAWN_DEMO_GATE GNSPAWN_DEMO_GATE_PHASE
}

pkg_preinst() {
	gate preinst
}

pkg_postinst() {
	gate postinst
}
