/* Metadata snapshots: the listing of a mounted source, kept in the cache
 * directory (CACHE_DIR/meta/<id>.zst, zstd-compressed) so a restart can mount
 * and serve cached data while the backend is unreachable. The content is
 * opaque here (fs/ serializes its tree); this module only stores it safely:
 * written to a temporary file, fsynced, renamed over the old one, and checked
 * (magic, length, checksum) when read back. */
#ifndef MODELFS_SNAPSHOT_H
#define MODELFS_SNAPSHOT_H

#include <stddef.h>

/* @source_id names the mount's source (endpoint + bucket + prefix).
 * @return 0 or -errno. */
int snapshot_save(const char *cache_dir, const char *source_id, const void *data, size_t len);

/* @return 0 with *@data (malloc'd) and *@len, -ENOENT when there is none,
 * -EPROTO when it is damaged. */
int snapshot_load(const char *cache_dir, const char *source_id, void **data, size_t *len);

#endif
