EAPI=8
DESCRIPTION="An upgrade that waits in pkg_preinst or pkg_postinst while GNSPAWN_DEMO_GATE says so"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

# GNSPAWN_DEMO_GATE names a FIFO, GNSPAWN_DEMO_GATE_PHASE a phase (preinst or postinst),
# both in the environment emerge runs in. In that phase the package appends the phase's
# name to ${GNSPAWN_DEMO_GATE}.reached and then waits for a line on the FIFO: whoever
# reads the file knows where the merge stands.
#
# Portage hands a phase that runs from a saved environment (pkg_preinst and pkg_postinst
# of a build, every phase of a binary package) nothing of the environment it was called
# with, so the settings are read from the nearest process above this one that has them
# in its environment: emerge.
gate_setting() {
	local pid=${BASHPID} entry
	while [[ ${pid} -gt 1 ]]; do
		while IFS= read -r -d '' entry; do
			if [[ ${entry} == "$1="* ]]; then
				echo "${entry#*=}"
				return 0
			fi
		done 2>/dev/null < "/proc/${pid}/environ"
		pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/${pid}/status" 2>/dev/null)
		pid=${pid:-0}
	done
}

gate() {
	local fifo phase
	fifo=$(gate_setting GNSPAWN_DEMO_GATE)
	phase=$(gate_setting GNSPAWN_DEMO_GATE_PHASE)
	[[ -n ${fifo} && ${phase} == "$1" ]] || return 0
	echo "$1" >> "${fifo}.reached" || die
	read -r < "${fifo}" || die
}

src_install() {
	insinto /usr/share/gate
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
	# The environment saved now goes into the binary package: it keeps no gate settings
	# of the build that made it.
	unset GNSPAWN_DEMO_GATE GNSPAWN_DEMO_GATE_PHASE
}

pkg_preinst() {
	gate preinst
}

pkg_postinst() {
	gate postinst
}
