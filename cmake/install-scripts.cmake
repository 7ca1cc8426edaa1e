# Run by "cmake --install": writes the mount(8) helper and the systemd unit
# with the binary's installed path, CMAKE_INSTALL_PREFIX being the one given
# to cmake --install --prefix (or the configured one); file(INSTALL) adds
# $ENV{DESTDIR} itself.
set(bin "${CMAKE_INSTALL_PREFIX}/${MODELFS_BINDIR}/modelfs")
foreach(var MODELFS_HELPER_DIR MODELFS_UNIT_DIR)
  if(IS_ABSOLUTE "${${var}}")
    set(${var}_FULL "${${var}}")
  else()
    set(${var}_FULL "${CMAKE_INSTALL_PREFIX}/${${var}}")
  endif()
endforeach()
set(MODELFS_BIN "${bin}")
set(tmp "${MODELFS_BUILD}/install-scripts")
configure_file("${MODELFS_SRC}/systemd/mount.fuse.modelfs.in" "${tmp}/mount.fuse.modelfs" @ONLY)
configure_file("${MODELFS_SRC}/systemd/modelfs@.service" "${tmp}/modelfs@.service" @ONLY)
file(INSTALL "${tmp}/mount.fuse.modelfs" DESTINATION "${MODELFS_HELPER_DIR_FULL}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)
file(INSTALL "${tmp}/mount.fuse.modelfs" DESTINATION "${MODELFS_HELPER_DIR_FULL}"
     RENAME mount.modelfs
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)
file(INSTALL "${tmp}/modelfs@.service" DESTINATION "${MODELFS_UNIT_DIR_FULL}")
