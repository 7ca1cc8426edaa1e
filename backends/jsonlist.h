/* The JSON listings of the http(s):// and hf:// sources: modelfs's own
 * manifest, nginx's JSON autoindex, and the Hugging Face Hub's tree and
 * revision answers, parsed with jansson. Every answer is untrusted: a parser
 * bounds what it takes (paths, sizes, nesting) and answers -EPROTO with one
 * line in @msg for anything else, never a partial listing. Internal to
 * backends/ (and the fuzz targets).
 *
 * The manifest (docs/design.md "http(s)://"), one JSON object:
 *   {"modelfs_manifest": 1, "files": [
 *     {"path": "config.json", "size": 47, "mtime": 1764650000},
 *     {"path": "weights/model.safetensors", "size": 9, "mtime": 1764650000,
 *      "etag": "6751a2f0-9", "sha256": "<64 hex>"},
 *     {"path": "emptydir/"}]}
 * path: relative, '/'-separated, no "." or ".." segments; ending in '/' for
 * an empty directory. size: bytes. mtime: the Last-Modified the server sends,
 * in seconds since the epoch. etag: the ETag the server sends (without
 * quotes). sha256: carried for tools, not checked on ranged reads. Other keys
 * are ignored, so later versions can add some.
 */
#ifndef MODELFS_JSONLIST_H
#define MODELFS_JSONLIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSONLIST_MANIFEST_NAME "modelfs-manifest.json"
#define JSONLIST_PATH_MAX 1024 /* S3's key limit: the longest path a listing takes */

struct jsonlist_entry {
	const char *path;   /* see above; autoindex: the name in its directory */
	int is_dir;         /* manifest: an empty directory; autoindex, Hub: a directory */
	uint64_t size;
	int64_t mtime;      /* seconds since the epoch; -1 when absent */
	const char *etag;   /* manifest: "etag"; Hub: the LFS sha256, else the git oid; or "" */
	const char *sha256; /* manifest only; or "" */
};

/* Called per entry, in the answer's order; a non-zero return stops the
 * parse and is returned. */
typedef int (*jsonlist_cb)(void *arg, const struct jsonlist_entry *e);

int jsonlist_manifest(const char *buf, size_t len, jsonlist_cb cb, void *arg, char *msg,
		      size_t msg_len);
/* nginx "autoindex_format json": [{"name", "type": "file"|"directory"|...,
 * "mtime": HTTP-date, "size"}]; other types are skipped. */
int jsonlist_autoindex(const char *buf, size_t len, jsonlist_cb cb, void *arg, char *msg,
		       size_t msg_len);
/* The Hub's GET /api/models/REPO/tree/REV: [{"type": "file"|"directory",
 * "oid", "size", "path", "lfs": {"oid", "size"}}]. */
int jsonlist_hub_tree(const char *buf, size_t len, jsonlist_cb cb, void *arg, char *msg,
		      size_t msg_len);
/* The Hub's GET /api/models/REPO/revision/REV: the commit ("sha", 40 hex)
 * and "lastModified" (ISO 8601; *@mtime -1 when absent). */
int jsonlist_hub_revision(const char *buf, size_t len, char sha[41], int64_t *mtime, char *msg,
			  size_t msg_len);

/* Write the manifest of the regular files under @dir to @out, sorted by
 * path (symlinks followed while they stay inside @dir; other file types and
 * a top-level JSONLIST_MANIFEST_NAME skipped), with sha256 digests when
 * @with_sha256. @return 0 or -errno with a line in @msg. */
int jsonlist_write_manifest(const char *dir, FILE *out, int with_sha256, char *msg,
			    size_t msg_len);

/* Is @p a path a listing may hold (see above)? @dir_ok: one ending in '/'. */
int jsonlist_path_ok(const char *p, int dir_ok);

#endif
