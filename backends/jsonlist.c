/* JSON listings (see jsonlist.h). jansson rather than a parser of our own:
 * these answers come from servers we do not control, and a strict, fuzzed,
 * well-kept parser (RFC 8259, duplicate keys refused, NUL in strings
 * refused) is worth the dependency (docs/design.md). */
#include "jsonlist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "backend.h"

int jsonlist_path_ok(const char *p, int dir_ok)
{
	size_t n = strlen(p);
	const char *seg = p;

	if (n == 0 || n > JSONLIST_PATH_MAX || p[0] == '/')
		return 0;
	if (p[n - 1] == '/' && !dir_ok)
		return 0;
	for (const char *c = p;; c++) {
		if (*c == '/' || *c == '\0') {
			size_t sl = (size_t)(c - seg);
			if (sl == 0 && *c == '/')
				return 0; /* "//" */
			if (sl == 0 && *c == '\0')
				return c > p && c[-1] == '/'; /* the trailing '/' of a directory */
			if ((sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
				return 0;
			if (*c == '\0')
				return 1;
			seg = c + 1;
		} else if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			return 0; /* control characters: no store needs them, logs would */
		}
	}
}

static json_t *load(const char *buf, size_t len, const char *what, char *msg, size_t msg_len)
{
	json_error_t je;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);

	if (!j)
		snprintf(msg, msg_len, "%s is not JSON (line %d: %s)", what, je.line, je.text);
	return j;
}

/* A string member, or NULL (absent or not a string). */
static const char *str_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	/* json_string_length counts an embedded NUL, strlen stops there; the
	 * parser refuses those already, this keeps it true if flags change */
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return NULL;
	return json_string_value(v);
}

/* A size member: an integer in [0, BACKEND_SIZE_MAX]. @return 0, 1 when
 * absent, -1 when present but bad. */
static int size_of(json_t *o, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!v)
		return 1;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > BACKEND_SIZE_MAX)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int hex_ok(const char *s, size_t n)
{
	if (strlen(s) != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int jsonlist_manifest(const char *buf, size_t len, jsonlist_cb cb, void *arg, char *msg,
		      size_t msg_len)
{
	json_t *j = load(buf, len, "the manifest", msg, msg_len), *files, *e;
	size_t i;
	int err = 0;

	if (!j)
		return -EPROTO;
	if (!json_is_object(j) || json_integer_value(json_object_get(j, "modelfs_manifest")) != 1 ||
	    !json_is_array(files = json_object_get(j, "files"))) {
		snprintf(msg, msg_len, "the manifest is not {\"modelfs_manifest\": 1, \"files\": [...]}");
		err = -EPROTO;
		goto out;
	}
	json_array_foreach(files, i, e) {
		struct jsonlist_entry en = {.mtime = -1, .etag = "", .sha256 = ""};
		json_t *mt = json_object_get(e, "mtime");
		int sz;

		en.path = json_is_object(e) ? str_of(e, "path") : NULL;
		if (!en.path || !jsonlist_path_ok(en.path, 1)) {
			snprintf(msg, msg_len, "manifest entry %zu: no path, or not a relative path "
				 "without '.', '..' or empty segments", i);
			err = -EPROTO;
			goto out;
		}
		en.is_dir = en.path[strlen(en.path) - 1] == '/';
		sz = size_of(e, "size", &en.size);
		if (sz < 0 || (sz > 0 && !en.is_dir)) {
			snprintf(msg, msg_len, "manifest entry '%s': %s", en.path,
				 sz < 0 ? "size is not a byte count" : "no size");
			err = -EPROTO;
			goto out;
		}
		if (mt) {
			if (!json_is_integer(mt) || json_integer_value(mt) < 0) {
				snprintf(msg, msg_len, "manifest entry '%s': mtime is not seconds "
					 "since the epoch", en.path);
				err = -EPROTO;
				goto out;
			}
			en.mtime = (int64_t)json_integer_value(mt);
		}
		if (json_object_get(e, "etag")) {
			en.etag = str_of(e, "etag");
			if (!en.etag || !*en.etag || strlen(en.etag) >= BACKEND_ETAG_MAX) {
				snprintf(msg, msg_len, "manifest entry '%s': a bad etag", en.path);
				err = -EPROTO;
				goto out;
			}
		}
		if (json_object_get(e, "sha256")) {
			en.sha256 = str_of(e, "sha256");
			if (!en.sha256 || !hex_ok(en.sha256, 64)) {
				snprintf(msg, msg_len, "manifest entry '%s': sha256 is not 64 lower-case "
					 "hex digits", en.path);
				err = -EPROTO;
				goto out;
			}
		}
		err = cb(arg, &en);
		if (err)
			goto out;
	}
out:
	json_decref(j);
	return err;
}

int jsonlist_autoindex(const char *buf, size_t len, jsonlist_cb cb, void *arg, char *msg,
		       size_t msg_len)
{
	json_t *j = load(buf, len, "the directory index", msg, msg_len), *e;
	size_t i;
	int err = 0;

	if (!j)
		return -EPROTO;
	if (!json_is_array(j)) {
		snprintf(msg, msg_len, "the directory index is not a JSON array");
		err = -EPROTO;
		goto out;
	}
	json_array_foreach(j, i, e) {
		struct jsonlist_entry en = {.mtime = -1, .etag = "", .sha256 = ""};
		const char *type = json_is_object(e) ? str_of(e, "type") : NULL;
		const char *mt;

		en.path = json_is_object(e) ? str_of(e, "name") : NULL;
		if (!type || !en.path || !jsonlist_path_ok(en.path, 0) || strchr(en.path, '/')) {
			snprintf(msg, msg_len, "directory index entry %zu: no type, or no name "
				 "that is one path segment", i);
			err = -EPROTO;
			goto out;
		}
		if (strcmp(type, "directory") == 0) {
			en.is_dir = 1;
		} else if (strcmp(type, "file") == 0) {
			if (size_of(e, "size", &en.size) != 0) {
				snprintf(msg, msg_len, "directory index entry '%s': no byte count",
					 en.path);
				err = -EPROTO;
				goto out;
			}
		} else {
			continue; /* "other": sockets, devices */
		}
		mt = str_of(e, "mtime");
		if (mt) {
			time_t t = curl_getdate(mt, NULL);
			en.mtime = t >= 0 ? (int64_t)t : -1;
		}
		err = cb(arg, &en);
		if (err)
			goto out;
	}
out:
	json_decref(j);
	return err;
}

int jsonlist_hub_tree(const char *buf, size_t len, jsonlist_cb cb, void *arg, char *msg,
		      size_t msg_len)
{
	json_t *j = load(buf, len, "the Hub's tree", msg, msg_len), *e;
	size_t i;
	int err = 0;

	if (!j)
		return -EPROTO;
	if (!json_is_array(j)) {
		snprintf(msg, msg_len, "the Hub's tree is not a JSON array");
		err = -EPROTO;
		goto out;
	}
	json_array_foreach(j, i, e) {
		struct jsonlist_entry en = {.mtime = -1, .etag = "", .sha256 = ""};
		const char *type = json_is_object(e) ? str_of(e, "type") : NULL;
		json_t *lfs = json_is_object(e) ? json_object_get(e, "lfs") : NULL;

		en.path = json_is_object(e) ? str_of(e, "path") : NULL;
		if (!type || !en.path || !jsonlist_path_ok(en.path, 0)) {
			snprintf(msg, msg_len, "Hub tree entry %zu: no type, or a bad path", i);
			err = -EPROTO;
			goto out;
		}
		if (strcmp(type, "directory") == 0) {
			en.is_dir = 1;
		} else if (strcmp(type, "file") == 0) {
			uint64_t lsize;
			en.etag = str_of(e, "oid");
			if (size_of(e, "size", &en.size) != 0 || !en.etag || !hex_ok(en.etag, 40)) {
				snprintf(msg, msg_len, "Hub tree entry '%s': no size or no git oid",
					 en.path);
				err = -EPROTO;
				goto out;
			}
			if (lfs) {
				/* the file is its LFS object: that is its identity and size */
				en.etag = json_is_object(lfs) ? str_of(lfs, "oid") : NULL;
				if (!en.etag || !hex_ok(en.etag, 64) || size_of(lfs, "size", &lsize) != 0) {
					snprintf(msg, msg_len, "Hub tree entry '%s': a bad lfs object",
						 en.path);
					err = -EPROTO;
					goto out;
				}
				en.size = lsize;
			}
		} else {
			continue; /* submodules and what may come */
		}
		err = cb(arg, &en);
		if (err)
			goto out;
	}
out:
	json_decref(j);
	return err;
}

int jsonlist_hub_revision(const char *buf, size_t len, char sha[41], int64_t *mtime, char *msg,
			  size_t msg_len)
{
	json_t *j = load(buf, len, "the Hub's revision answer", msg, msg_len);
	const char *s, *lm;
	int err = 0;

	*mtime = -1;
	if (!j)
		return -EPROTO;
	s = json_is_object(j) ? str_of(j, "sha") : NULL;
	if (!s || !hex_ok(s, 40)) {
		snprintf(msg, msg_len, "the Hub's revision answer has no commit (\"sha\")");
		err = -EPROTO;
		goto out;
	}
	memcpy(sha, s, 41);
	lm = str_of(j, "lastModified");
	if (lm) {
		struct tm tm = {0};
		const char *end = strptime(lm, "%Y-%m-%dT%H:%M:%S", &tm);
		if (end) {
			time_t t = timegm(&tm);
			*mtime = t >= 0 ? (int64_t)t : -1;
		}
	}
out:
	json_decref(j);
	return err;
}

/* ---- modelfs manifest DIR */

struct mf_file {
	char *path;
	uint64_t size;
	int64_t mtime;
	int is_dir;
};

struct mf_walk {
	char root_real[PATH_MAX];
	struct mf_file *v;
	size_t n, cap;
	char *msg;
	size_t msg_len;
};

static int mf_add(struct mf_walk *w, const char *path, const struct stat *st, int is_dir)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 256;
		struct mf_file *nv = realloc(w->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		w->v = nv;
		w->cap = cap;
	}
	w->v[w->n].path = strdup(path);
	if (!w->v[w->n].path)
		return -ENOMEM;
	w->v[w->n].size = is_dir ? 0 : (uint64_t)st->st_size;
	w->v[w->n].mtime = (int64_t)st->st_mtim.tv_sec;
	w->v[w->n].is_dir = is_dir;
	w->n++;
	return 0;
}

/* Does @abs (a symlink's target, resolved) stay inside the root? */
static int inside(const struct mf_walk *w, const char *abs)
{
	size_t n = strlen(w->root_real);
	return strncmp(abs, w->root_real, n) == 0 && (abs[n] == '/' || abs[n] == '\0');
}

static int mf_dir(struct mf_walk *w, const char *abs, const char *rel, int depth)
{
	DIR *d;
	struct dirent *de;
	size_t before = w->n;
	int err = 0;

	if (depth > 64) {
		snprintf(w->msg, w->msg_len, "%s: more than 64 levels of directories", abs);
		return -ELOOP;
	}
	d = opendir(abs);
	if (!d) {
		err = -errno;
		snprintf(w->msg, w->msg_len, "%s: %s", abs, strerror(errno));
		return err;
	}
	while (!err && (de = readdir(d))) {
		char a[PATH_MAX], r[PATH_MAX], real[PATH_MAX];
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!*rel && strcmp(de->d_name, JSONLIST_MANIFEST_NAME) == 0)
			continue;
		if ((size_t)snprintf(a, sizeof(a), "%s/%s", abs, de->d_name) >= sizeof(a) ||
		    (size_t)snprintf(r, sizeof(r), "%s%s%s", rel, *rel ? "/" : "", de->d_name) >=
			    sizeof(r))
			continue;
		if (lstat(a, &st) != 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			/* followed while it stays inside (the Hub cache's snapshots) */
			if (!realpath(a, real) || !inside(w, real) || stat(real, &st) != 0 ||
			    S_ISDIR(st.st_mode))
				continue;
		}
		if (!jsonlist_path_ok(r, 0))
			continue;
		if (S_ISDIR(st.st_mode))
			err = mf_dir(w, a, r, depth + 1);
		else if (S_ISREG(st.st_mode))
			err = mf_add(w, r, &st, 0);
	}
	closedir(d);
	if (!err && w->n == before && *rel) {
		/* an empty directory is listed, as "dir/" */
		char r[PATH_MAX];
		struct stat st;
		snprintf(r, sizeof(r), "%s/", rel);
		if (stat(abs, &st) == 0)
			err = mf_add(w, r, &st, 1);
	}
	return err;
}

static int mf_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mf_file *)a)->path, ((const struct mf_file *)b)->path);
}

static int file_sha256(const char *path, char hex[65])
{
	unsigned char md[32], *buf = malloc(1 << 20);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	ssize_t n;

	if (!buf || !ctx || fd < 0 || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		err = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	while ((n = read(fd, buf, 1 << 20)) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	if (n < 0) {
		err = -errno;
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(ctx);
	free(buf);
	return err;
}

int jsonlist_write_manifest(const char *dir, FILE *out, int with_sha256, char *msg,
			    size_t msg_len)
{
	struct mf_walk w = {.msg = msg, .msg_len = msg_len};
	int err;

	if (!realpath(dir, w.root_real)) {
		err = -errno;
		snprintf(msg, msg_len, "%s: %s", dir, strerror(errno));
		return err;
	}
	err = mf_dir(&w, w.root_real, "", 0);
	if (err)
		goto out;
	qsort(w.v, w.n, sizeof(*w.v), mf_cmp);
	fprintf(out, "{\"modelfs_manifest\": 1, \"files\": [\n");
	size_t written = 0;
	for (size_t i = 0; i < w.n && !err; i++) {
		json_t *e, *path = json_string(w.v[i].path);
		char *line;
		if (!path) {
			/* JSON strings are UTF-8; so are the names a Hub or S3 holds */
			fprintf(stderr, "modelfs manifest: skipped %s: its name is not UTF-8\n",
				w.v[i].path);
			continue;
		}
		e = json_object();
		if (!e) {
			json_decref(path);
			err = -ENOMEM;
			break;
		}
		json_object_set_new(e, "path", path);
		if (!w.v[i].is_dir) {
			json_object_set_new(e, "size", json_integer((json_int_t)w.v[i].size));
			json_object_set_new(e, "mtime", json_integer((json_int_t)w.v[i].mtime));
		}
		if (with_sha256 && !w.v[i].is_dir) {
			char abs[PATH_MAX + JSONLIST_PATH_MAX + 2], hex[65];
			snprintf(abs, sizeof(abs), "%s/%s", w.root_real, w.v[i].path);
			err = file_sha256(abs, hex);
			if (err) {
				snprintf(msg, msg_len, "%s: %s", abs, strerror(-err));
				json_decref(e);
				break;
			}
			json_object_set_new(e, "sha256", json_string(hex));
		}
		/* JSON_PRESERVE_ORDER: path first, as written; one entry a line */
		line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		json_decref(e);
		if (!line) {
			err = -ENOMEM;
			break;
		}
		fprintf(out, "%s%s", written++ ? ",\n" : "", line);
		free(line);
	}
	if (!err)
		fprintf(out, "%s]}\n", written ? "\n" : "");
	if (!err && (fflush(out) != 0 || ferror(out))) {
		err = -EIO;
		snprintf(msg, msg_len, "writing the manifest: %s", strerror(errno));
	}
out:
	for (size_t i = 0; i < w.n; i++)
		free(w.v[i].path);
	free(w.v);
	return err;
}
