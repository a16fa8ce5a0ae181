# SPDX-License-Identifier: MIT
#
# Run by `cmake --install` (install(CODE) in CMakeLists.txt), after the programs are in
# place: installs the systemd unit with the paths of *this* install, and the configuration
# only where there is none yet. It runs at install time, so CMAKE_INSTALL_PREFIX is the
# prefix given to `cmake --install --prefix` (or the one configured), and DESTDIR is honoured.
#
# Set by the caller: IMGD_SOURCE_DIR, IMGD_BINARY_DIR and the configured
# IMGD_SBINDIR, IMGD_BINDIR, IMGD_SYSCONFDIR, IMGD_LIBDIR (relative to the prefix unless the
# builder gave absolute ones).
#
#   sysconfdir  /etc for the prefixes / and /usr (as GNUInstallDirs does when the prefix is
#               given at configure time), else PREFIX/etc, unless configured absolute
#   units       PREFIX/lib/systemd/system/imgd.service and imgd-http.socket
#               (/usr/lib/systemd/system for /usr, /usr/local/lib/systemd/system for
#               /usr/local: both on systemd's search path)

set(prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/+$" "" prefix "${prefix}")

# dir when absolute, else PREFIX/dir.
function(imgd_full var dir)
  if(IS_ABSOLUTE "${dir}")
    set(${var} "${dir}" PARENT_SCOPE)
  else()
    set(${var} "${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

imgd_full(sbindir "${IMGD_SBINDIR}")
imgd_full(bindir "${IMGD_BINDIR}")
if(IS_ABSOLUTE "${IMGD_SYSCONFDIR}")
  set(sysconfdir "${IMGD_SYSCONFDIR}")
elseif(prefix STREQUAL "" OR prefix STREQUAL "/usr")
  set(sysconfdir "/etc")
else()
  set(sysconfdir "${prefix}/${IMGD_SYSCONFDIR}")
endif()
if(prefix STREQUAL "")
  set(unitdir "/usr/lib/systemd/system")
else()
  set(unitdir "${prefix}/lib/systemd/system")
endif()

# The unit as shipped names /usr/sbin/imgd, /usr/bin/imgctl and /etc/imgd/.
file(READ "${IMGD_SOURCE_DIR}/systemd/imgd.service" unit)
string(REPLACE "/usr/sbin/imgd" "${sbindir}/imgd" unit "${unit}")
string(REPLACE "/usr/bin/imgctl" "${bindir}/imgctl" unit "${unit}")
string(REPLACE "/etc/imgd/" "${sysconfdir}/imgd/" unit "${unit}")
file(WRITE "${IMGD_BINARY_DIR}/install/imgd.service" "${unit}")
file(INSTALL DESTINATION "${unitdir}" TYPE FILE FILES "${IMGD_BINARY_DIR}/install/imgd.service")
# GET /metrics and /health by socket activation (off until enabled: systemctl enable --now
# imgd-http.socket); it names no path of the install.
file(INSTALL DESTINATION "${unitdir}" TYPE FILE FILES "${IMGD_SOURCE_DIR}/systemd/imgd-http.socket")

# The configuration: an operator's file is never overwritten.
set(conf "${sysconfdir}/imgd/imgd.conf")
if(EXISTS "$ENV{DESTDIR}${conf}")
  message(STATUS "Keeping: $ENV{DESTDIR}${conf} (this version's example is in the doc directory)")
else()
  file(INSTALL DESTINATION "${sysconfdir}/imgd" TYPE FILE FILES "${IMGD_SOURCE_DIR}/etc/imgd.conf")
endif()
