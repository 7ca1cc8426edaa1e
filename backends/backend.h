/* The backend interface: an object store seen as a flat namespace of keys.
 *
 * A backend is a const table of operations (struct backend_ops), one file per
 * protocol, registered by URL scheme in backend.c. Nothing above this layer
 * knows which protocol it talks to; adding a scheme touches no file in fs/ or
 * cache/. Every operation returns 0 or -errno, mapped here at the boundary:
 *   ENOENT  no such key or bucket       EACCES  credentials refused (401/403)
 *   ESTALE  the object changed (ETag or size no longer what the caller holds)
 *   ETIMEDOUT / ECONNREFUSED / EHOSTUNREACH  the endpoint could not be reached
 *   EPROTO  the server answered something we cannot parse, or not what was
 *           asked (another byte range, a listing that repeats itself)
 *   EFBIG   a listing beyond the bounds one mount takes (see s3.c)
 *   EIO     anything else, after the configured retries
 * All operations are safe to call from many threads at once.
 */
#ifndef MODELFS_BACKEND_H
#define MODELFS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#define BACKEND_ETAG_MAX 128
/* Sizes above this are not believed (off_t is 63 bits; S3's largest object
 * is 5 TiB): a listing entry is skipped, a stat fails with -EPROTO. */
#define BACKEND_SIZE_MAX (1ull << 62)

/* The mount-time probe's bound: a store that connects but does not answer
 * within it fails the mount (or takes the offline path) in seconds. */
#define BACKEND_PROBE_MS 5000

/* What a listing or a stat returns for one object. */
struct backend_object {
	const char *key;   /* full key; borrowed, valid during the callback */
	uint64_t size;
	int64_t mtime;     /* LastModified, seconds since the epoch */
	char etag[BACKEND_ETAG_MAX]; /* without quotes; "" when unknown */
};

/* The version of an object a read is for, as listed. */
struct backend_ref {
	const char *key;
	const char *etag; /* "" or NULL: unknown (no check) */
	uint64_t size;    /* 0: unknown (no check) */
};

/* Called once per object (@obj set) or per common prefix (@obj NULL, @key is
 * the prefix ending in the delimiter). A non-zero return stops the listing
 * and is returned by list(). */
typedef int (*backend_list_cb)(void *arg, const char *key, const struct backend_object *obj);

/* What every backend gets at open, whatever its protocol. */
struct backend_config {
	/* the -o options the SOURCE's backend declared (struct backend_option),
	 * as given, "key" or "key=value", in order: the backend takes its own
	 * and refuses another backend's */
	const char *const *opts;
	size_t n_opts;
	const char *ca_file;      /* NULL: system trust store */
	int insecure_tls;         /* skip TLS verification (logged loudly by the caller) */
	int no_etag_match;        /* reads do not check the ETag (see no_etag_match in --help) */
	int retries;              /* extra attempts after a retryable failure */
	unsigned connect_timeout_ms;
	unsigned request_timeout_ms; /* one attempt, start to end */
};

/* One -o option of a backend. The front end takes every registered
 * backend's options out of the libfuse arguments and hands them to the
 * SOURCE's backend, which parses them. */
/* The refusal of access_key= / secret_key=, which several backends name. */
#define BACKEND_REFUSE_KEYS                                                          \
	"credentials are not accepted on the command line (they would show in ps): "  \
	"use the environment or a credentials file (modelfs --help: each source's)"

struct backend_option {
	const char *name;   /* "endpoint=" (takes a value) or "path_style" (a flag) */
	const char *refuse; /* non-NULL: refused with this line (secrets never on argv) */
};

struct backend;

struct backend_ops {
	const char *scheme; /* "s3", ... */
	const char *syntax; /* SOURCE as users write it: "s3://BUCKET[/PREFIX]" */
	const char *help;   /* its --help section: options, environment, credentials */
	const struct backend_option *options; /* ends with a NULL name */
	/* A listing with delimiter "/" costs what the one level holds (S3's
	 * CommonPrefixes), not the whole subtree: a bucket's root is then
	 * listed lazily, a directory at a time (listing=auto). */
	int lists_by_dir;
	/* Parse @source (its own scheme), take its options from @cfg, find its
	 * credentials, and create a client. Nothing is sent yet. Sets the
	 * header's prefix, name and what. On error @msg gets one line. */
	int (*open)(const char *source, const struct backend_config *cfg, struct backend **out,
		    char *msg, size_t msg_len);
	/* Frees everything, the header's strings too (backend_base_free). */
	void (*close)(struct backend *be);
	/* Probe the source once, without retries and within BACKEND_PROBE_MS, so
	 * a mount fails fast. On error @msg (may be NULL) gets one human line
	 * saying what went wrong. Only -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH
	 * and -EIO (5xx) may be an outage; a configuration error (a host name
	 * built from the bucket that does not resolve, TLS, 4xx) is another
	 * errno. */
	int (*check)(struct backend *be, const char *prefix, char *msg, size_t msg_len);
	/* Every key starting with @prefix, in key order. @delimiter NULL lists
	 * the whole subtree; "/" gives one level with common prefixes. Follows
	 * continuation tokens until the listing is complete. */
	int (*list)(struct backend *be, const char *prefix, const char *delimiter,
		    backend_list_cb cb, void *arg);
	/* One object's metadata (HEAD). @out->key is NULL on return. */
	int (*stat)(struct backend *be, const char *key, struct backend_object *out);
	/* Read up to @len bytes at @off of @obj into @buf; *@got is the count
	 * read (short only at the end of the object). With @obj->etag non-empty,
	 * a read of another version fails with -ESTALE instead of returning its
	 * bytes; so does an answer whose total size is not @obj->size (when > 0). */
	int (*read)(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		    void *buf, size_t *got);
	/* The same as read, but the bytes go to @sink in pieces as they
	 * arrive (memory stays small whatever @len). @reset is called before
	 * every attempt: the bytes start over from @off. A non-zero return of
	 * @sink ends the read with that error. Short only at the object's end
	 * (the caller counts the bytes). */
	int (*read_stream)(struct backend *be, const struct backend_ref *obj, uint64_t off,
			   uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			   void (*reset)(void *arg), void *arg);
	/* Shutdown: end every request in flight within about a second and
	 * fail later ones at once with -ECANCELED. */
	void (*cancel)(struct backend *be);
	/* Where requests go (a URL without credentials), for messages. */
	const char *(*endpoint)(struct backend *be);
};

/* Every backend instance starts with this header, filled by open. */
struct backend {
	const struct backend_ops *ops;
	char *prefix; /* the keys the mount shows: "" or "some/prefix/" (ends in '/') */
	char *name;   /* the source's identity in the cache: "s3://bucket[@endpoint]";
		       * two mounts of one name share their cached objects */
	char *what;   /* for messages: "bucket 'models'" */
};

/* Open @source with the backend of its scheme. An unknown scheme gets
 * -EPROTONOSUPPORT and a line listing the schemes there are; the rest is
 * the backend's open. */
int backend_open(const char *source, const struct backend_config *cfg, struct backend **out,
		 char *msg, size_t msg_len);

/* The operations as the layers above call them: each is timed and counted
 * (stats.h), then the backend's own is called. */
int backend_check(struct backend *be, const char *prefix, char *msg, size_t msg_len);
int backend_list(struct backend *be, const char *prefix, const char *delimiter,
		 backend_list_cb cb, void *arg);
int backend_stat(struct backend *be, const char *key, struct backend_object *out);
int backend_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		 void *buf, size_t *got);
/* Only where be->ops->read_stream is set. */
int backend_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
			uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			void (*reset)(void *arg), void *arg);

/* The backends compiled in, in the order --help lists them; @n gets the count. */
const struct backend_ops *const *backend_registry(size_t *n);

/* The schemes compiled in, as a string for --version ("s3://, oss://"). */
const char *backend_schemes(void);

/* Helpers for backends. */

/* "BUCKET[/PREFIX]" (the part after "scheme://"): @first gets BUCKET (1-255
 * bytes), @prefix "" or "a/b/" (no empty, "." or ".." segments).
 * @return 0, -EINVAL, -ENOMEM. */
int backend_split_path(const char *rest, char **first, char **prefix);

/* Fill the header: ops, strdup'd prefix, and name/what from printf formats.
 * @return 0 or -ENOMEM. */
int backend_base_init(struct backend *be, const struct backend_ops *ops, const char *prefix);
int backend_base_name(struct backend *be, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int backend_base_what(struct backend *be, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void backend_base_free(struct backend *be);

/* getenv, with an empty variable counted as unset (as the vendors' tools do). */
const char *backend_getenv(const char *name);

/* Split an option "key=value" or "key": @return 1 when it is @name ("key="
 * or "key"), with *@val its value ("" for a flag), else 0. */
int backend_opt_is(const char *opt, const char *name, const char **val);

/* A listing built in memory (sources whose listing is not sorted pages: a
 * manifest, a directory walk, the Hub's tree), then handed out sorted. */
struct backend_keylist {
	struct backend_object *v; /* key strdup'd */
	size_t n, cap;
};

int backend_keylist_add(struct backend_keylist *kl, const char *key, uint64_t size,
			int64_t mtime, const char *etag);
/* Sort, then call @cb for the keys under @prefix: all of them (@delimiter
 * NULL), or one level with the common prefixes ("/"). */
int backend_keylist_emit(struct backend_keylist *kl, const char *prefix, const char *delimiter,
			 backend_list_cb cb, void *arg);
void backend_keylist_free(struct backend_keylist *kl);

/* A bearer token: a value given once, or a file (a mounted Kubernetes
 * secret) re-read when it changes, so rotation needs no remount. */
struct backend_token;

/* @value or @path (one of them; surrounding blanks and newlines dropped).
 * A file that cannot be read or is empty is -errno with a line in @msg. */
int backend_token_open(const char *value, const char *path, struct backend_token **out,
		       char *msg, size_t msg_len);
/* "Authorization: Bearer ..." into @hdr (HTTP_HEADER_MAX bytes), or "" when
 * there is no token. Thread-safe. @return 0, -ENOMEM, or -EACCES when a
 * rotated file cannot be read (the last token read is kept then). */
int backend_token_header(struct backend_token *t, char *hdr, size_t hdr_len);
void backend_token_free(struct backend_token *t);

extern const struct backend_ops backend_s3;
extern const struct backend_ops backend_file;
extern const struct backend_ops backend_oss;
extern const struct backend_ops backend_http;
extern const struct backend_ops backend_hf;

#endif
