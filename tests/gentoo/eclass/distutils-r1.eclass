# Stand-in for distutils-r1.eclass, for one implementation: src_compile builds the
# wheel (the real eclass: gpep517 build-wheel), src_install installs it as the real
# eclass does (gpep517 install-wheel --prefix=/usr): the modules into
# /usr/lib/pythonX.Y/site-packages, the console scripts into /usr/bin, then the
# documentation with einstalldocs. Both phases are exported, as the real ones are,
# so that Portage's default src_compile never runs the project's Makefile.

# Dependencies are not resolved here: one implementation stands for all.
PYTHON_USEDEP="python_targets_python3_11(-)"
PYTHON_DEPS="dev-lang/python"
RDEPEND="${PYTHON_DEPS}"

_distutils-r1_python() {
	# The interpreter the test names, as python-r1 sets PYTHON for each implementation.
	PYTHON=${GNSPAWN_TEST_PYTHON:-python3}
	EPYTHON=$("${PYTHON}" -c 'import sys; print("python%d.%d" % sys.version_info[:2])') \
		|| die "cannot run ${PYTHON}"
}

distutils-r1_src_compile() {
	local PYTHON EPYTHON
	_distutils-r1_python
	"${PYTHON}" -m pip wheel --quiet --no-deps --wheel-dir="${WORKDIR}/wheel" . \
		|| die "building the wheel failed"
}

distutils-r1_src_install() {
	local PYTHON EPYTHON
	_distutils-r1_python
	local site="${D}/usr/lib/${EPYTHON}/site-packages"
	"${PYTHON}" -m pip install --quiet --no-deps --no-compile --target="${site}" \
		"${WORKDIR}"/wheel/*.whl || die "installing the wheel failed"
	mkdir -p "${ED}/usr/bin" || die
	mv "${site}"/bin/* "${ED}/usr/bin/" || die
	rmdir "${site}/bin" || die
	einstalldocs
}

EXPORT_FUNCTIONS src_compile src_install
