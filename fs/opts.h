/* Command-line and -o option parsing. Our options are taken out; everything
 * else is handed to libfuse (allow_other, max_read, ...), which rejects what
 * it does not know. Options of the backends (backend.h) are collected for
 * them; the secrets they name are refused here, never taken from argv
 * (visible in ps). */
#ifndef MODELFS_OPTS_H
#define MODELFS_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <fuse_opt.h>

struct fs_opts {
	char *source;     /* "s3://bucket/prefix", ...: the backend parses it */
	char *mountpoint;
	char **backend_opts; /* the backends' own options, "key[=value]", in order */
	size_t n_backend_opts;
	char *ca_file;
	int insecure_tls;
	int no_etag_match;
	int no_passthrough;   /* read cached files through the daemon, checking each block */
	uid_t uid;
	gid_t gid;
	mode_t umask;
	double attr_timeout_s, entry_timeout_s;
	int retries;
	unsigned connect_timeout_ms, request_timeout_ms;
	/* cache */
	char *cache_dir;           /* NULL: the default directory */
	int no_cache;
	uint64_t cache_size_bytes; /* 0: not given */
	double cache_size_pct;     /* > 0: a percentage of the cache filesystem */
	double cache_high, cache_low;
	uint32_t chunk_size;       /* 0: the cache's own or the default */
	double metadata_ttl_s;     /* revalidate a file's identity on open after this */
	unsigned list_ttl_s;       /* re-list the prefix this often; 0: only when asked */
	int listing;               /* 0 auto, 1 full, 2 lazy (listing=) */
	unsigned term_grace_s;     /* SIGTERM: serve open files this long; 0: unmount at once */
	char *prefetch;            /* ':'-separated globs to warm at mount, NULL: none */
	char *ready_file;          /* created once the prefetch is done, NULL: none */
	char *log_file;            /* in the background: log here, not to syslog/stderr */
	int log_level;             /* 0 error, 1 warning, 2 info, 3 debug */
	int log_json;              /* log_format=json: one JSON object per line */
	int metrics_port;          /* 0: no metrics server */
	char *metrics_addr;        /* NULL: 127.0.0.1 */
	char *metrics_dir;         /* NULL: no textfile */
	int metrics_per_model;     /* series by the first path component */
	int nonempty;              /* mount over a non-empty directory or a live mount */
	int rw_asked;              /* "rw" was given (by mount(8)): said once, ignored */
	int foreground, debug;
	int show_help, show_version;
};

/* Parse @argc/@argv into @o (defaults filled first) and @fargs (the
 * arguments for libfuse, with ro, fsname and subtype added). The options
 * the backends declare are collected unparsed in @o->backend_opts, except
 * those a backend refuses (secrets), which fail here.
 * @return 0, or -EINVAL with one human line in @err. */
int opts_parse(int argc, char **argv, struct fs_opts *o, struct fuse_args *fargs, char *err,
	       size_t err_len);
void opts_free(struct fs_opts *o);

/* The option list for --help. */
void opts_usage(const char *prog);

#endif
