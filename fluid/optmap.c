/* The option keys of `modelfs fluid` (optmap.h).
 *
 * One flat table, looked up by a linear scan: it has about 130 rows and is
 * read a few times per mount at start, never on a read path.
 *
 * Options modelfs refuses with a line naming its own (ossfs's use_cache=,
 * dbglevel=, ...) are in the table as ordinary options: modelfs gives its
 * hint, better than "unknown" here. The secrets modelfs refuses on its
 * command line (akId=, secret_key=, ...) are credentials here: they go to
 * the daemon's environment, where modelfs reads them.
 */
#include "optmap.h"

#include <string.h>

static const struct optmap_entry table[] = {
    /* fs/opts.c: every source's options */
    {"uid", OPTMAP_VALUE, "uid"},
    {"gid", OPTMAP_VALUE, "gid"},
    {"umask", OPTMAP_VALUE, "umask"},
    {"attr_timeout", OPTMAP_VALUE, "attr_timeout"},
    {"entry_timeout", OPTMAP_VALUE, "entry_timeout"},
    {"retries", OPTMAP_VALUE, "retries"},
    {"connect_timeout", OPTMAP_VALUE, "connect_timeout"},
    {"request_timeout", OPTMAP_VALUE, "request_timeout"},
    {"cache_dir", OPTMAP_VALUE, "cache_dir"},
    {"cache_size", OPTMAP_VALUE, "cache_size"},
    {"cache_high", OPTMAP_VALUE, "cache_high"},
    {"cache_low", OPTMAP_VALUE, "cache_low"},
    {"chunk_size", OPTMAP_VALUE, "chunk_size"},
    {"metadata_ttl", OPTMAP_VALUE, "metadata_ttl"},
    {"list_ttl", OPTMAP_VALUE, "list_ttl"},
    {"listing", OPTMAP_VALUE, "listing"},
    {"term_grace", OPTMAP_VALUE, "term_grace"},
    {"prefetch", OPTMAP_VALUE, "prefetch"},
    {"ready_file", OPTMAP_VALUE, "ready_file"},
    {"log_file", OPTMAP_VALUE, "log_file"},
    {"log_level", OPTMAP_VALUE, "log_level"},
    {"log_format", OPTMAP_VALUE, "log_format"},
    {"metrics_port", OPTMAP_VALUE, "metrics_port"},
    {"metrics_addr", OPTMAP_VALUE, "metrics_addr"},
    {"metrics_dir", OPTMAP_VALUE, "metrics_dir"},
    {"stat_cache_expire", OPTMAP_VALUE, "stat_cache_expire"},
    {"max_stat_cache_size", OPTMAP_VALUE, "max_stat_cache_size"},
    {"ca_file", OPTMAP_PATH, "ca_file"},
    {"insecure_tls", OPTMAP_FLAG, "insecure_tls"},
    {"no_cache", OPTMAP_FLAG, "no_cache"},
    {"no_etag_match", OPTMAP_FLAG, "no_etag_match"},
    {"no_passthrough", OPTMAP_FLAG, "no_passthrough"},
    {"metrics_per_model", OPTMAP_FLAG, "metrics_per_model"},
    {"nonempty", OPTMAP_FLAG, "nonempty"},
    {"kernel_cache", OPTMAP_FLAG, "kernel_cache"},
    {"ro", OPTMAP_FLAG, "ro"},
    {"rw", OPTMAP_FLAG, "rw"},
    {"debug", OPTMAP_FLAG, "debug"},
    /* mount(8) noise modelfs drops */
    {"_netdev", OPTMAP_FLAG, "_netdev"},
    {"nofail", OPTMAP_FLAG, "nofail"},
    {"auto", OPTMAP_FLAG, "auto"},
    {"noauto", OPTMAP_FLAG, "noauto"},
    {"user", OPTMAP_FLAG, "user"},
    {"users", OPTMAP_FLAG, "users"},
    {"defaults", OPTMAP_FLAG, "defaults"},
    /* other tools' options modelfs refuses with a line naming its own */
    {"use_cache", OPTMAP_VALUE, "use_cache"},
    {"ensure_diskfree", OPTMAP_VALUE, "ensure_diskfree"},
    {"dbglevel", OPTMAP_VALUE, "dbglevel"},
    {"readwrite_timeout", OPTMAP_VALUE, "readwrite_timeout"},
    {"parallel_count", OPTMAP_VALUE, "parallel_count"},
    {"multipart_size", OPTMAP_VALUE, "multipart_size"},
    {"enable_noobj_cache", OPTMAP_FLAG, "enable_noobj_cache"},
    /* libfuse's mount options (fsname= and subtype= are modelfs's own:
     * Fluid's mount check looks for "fuse.modelfs") */
    {"allow_other", OPTMAP_FLAG, "allow_other"},
    {"allow_root", OPTMAP_FLAG, "allow_root"},
    {"auto_unmount", OPTMAP_FLAG, "auto_unmount"},
    {"default_permissions", OPTMAP_FLAG, "default_permissions"},
    {"max_read", OPTMAP_VALUE, "max_read"},
    {"blksize", OPTMAP_VALUE, "blksize"},
    {"context", OPTMAP_VALUE, "context"},
    {"fscontext", OPTMAP_VALUE, "fscontext"},
    {"defcontext", OPTMAP_VALUE, "defcontext"},
    {"rootcontext", OPTMAP_VALUE, "rootcontext"},
    {"suid", OPTMAP_FLAG, "suid"},
    {"nosuid", OPTMAP_FLAG, "nosuid"},
    {"dev", OPTMAP_FLAG, "dev"},
    {"nodev", OPTMAP_FLAG, "nodev"},
    {"exec", OPTMAP_FLAG, "exec"},
    {"noexec", OPTMAP_FLAG, "noexec"},
    {"async", OPTMAP_FLAG, "async"},
    {"sync", OPTMAP_FLAG, "sync"},
    {"dirsync", OPTMAP_FLAG, "dirsync"},
    {"noatime", OPTMAP_FLAG, "noatime"},
    {"nodiratime", OPTMAP_FLAG, "nodiratime"},
    /* the backends' options (backends/s3.c, oss.c, hub.c, web.c) */
    {"endpoint", OPTMAP_VALUE, "endpoint"},
    {"url", OPTMAP_VALUE, "url"},
    {"region", OPTMAP_VALUE, "region"},
    {"sigv", OPTMAP_VALUE, "sigv"},
    {"profile", OPTMAP_VALUE, "profile"},
    {"path_style", OPTMAP_FLAG, "path_style"},
    {"use_path_request_style", OPTMAP_FLAG, "use_path_request_style"},
    {"virtual_host", OPTMAP_FLAG, "virtual_host"},
    {"passwd_file", OPTMAP_PATH, "passwd_file"},
    {"creds_dir", OPTMAP_PATH, "creds_dir"},
    {"creds_file", OPTMAP_PATH, "creds_file"},
    {"token_file", OPTMAP_PATH, "token_file"},
    /* JindoFS / Fluid, Hadoop s3a, Alluxio spellings */
    {"fs.oss.endpoint", OPTMAP_VALUE, "endpoint"},
    {"fs.oss.region", OPTMAP_VALUE, "region"},
    {"fs.s3.endpoint", OPTMAP_VALUE, "endpoint"},
    {"fs.s3.region", OPTMAP_VALUE, "region"},
    {"fs.s3a.endpoint", OPTMAP_VALUE, "endpoint"},
    {"fs.s3a.endpoint.region", OPTMAP_VALUE, "region"},
    {"alluxio.underfs.s3.endpoint", OPTMAP_VALUE, "endpoint"},
    {"fs.oss.accessKeyId", OPTMAP_KEY_ID, NULL},
    {"fs.oss.accessKeySecret", OPTMAP_KEY_SECRET, NULL},
    {"fs.oss.securityToken", OPTMAP_KEY_TOKEN, NULL},
    {"fs.s3.accessKeyId", OPTMAP_KEY_ID, NULL},
    {"fs.s3.accessKeySecret", OPTMAP_KEY_SECRET, NULL},
    {"fs.s3.securityToken", OPTMAP_KEY_TOKEN, NULL},
    {"fs.s3a.access.key", OPTMAP_KEY_ID, NULL},
    {"fs.s3a.secret.key", OPTMAP_KEY_SECRET, NULL},
    {"fs.s3a.session.token", OPTMAP_KEY_TOKEN, NULL},
    {"aws.accessKeyId", OPTMAP_KEY_ID, NULL},
    {"aws.secretKey", OPTMAP_KEY_SECRET, NULL},
    {"aws.sessionToken", OPTMAP_KEY_TOKEN, NULL},
    /* ossfs, s3fs, and the names in Fluid's own examples */
    {"akId", OPTMAP_KEY_ID, NULL},
    {"akSecret", OPTMAP_KEY_SECRET, NULL},
    {"securityToken", OPTMAP_KEY_TOKEN, NULL},
    {"access_key", OPTMAP_KEY_ID, NULL},
    {"secret_key", OPTMAP_KEY_SECRET, NULL},
    {"secret_access_key", OPTMAP_KEY_SECRET, NULL},
    {"aws_secret_access_key", OPTMAP_KEY_SECRET, NULL},
    {"session_token", OPTMAP_KEY_TOKEN, NULL},
    {"access-key-id", OPTMAP_KEY_ID, NULL},
    {"access-key-secret", OPTMAP_KEY_SECRET, NULL},
    /* the variables themselves */
    {"AWS_ACCESS_KEY_ID", OPTMAP_ENV, "AWS_ACCESS_KEY_ID"},
    {"AWS_SECRET_ACCESS_KEY", OPTMAP_ENV, "AWS_SECRET_ACCESS_KEY"},
    {"AWS_SESSION_TOKEN", OPTMAP_ENV, "AWS_SESSION_TOKEN"},
    {"OSS_ACCESS_KEY_ID", OPTMAP_ENV, "OSS_ACCESS_KEY_ID"},
    {"OSS_ACCESS_KEY_SECRET", OPTMAP_ENV, "OSS_ACCESS_KEY_SECRET"},
    {"OSS_SESSION_TOKEN", OPTMAP_ENV, "OSS_SESSION_TOKEN"},
    {"ALIBABA_CLOUD_ACCESS_KEY_ID", OPTMAP_ENV, "ALIBABA_CLOUD_ACCESS_KEY_ID"},
    {"ALIBABA_CLOUD_ACCESS_KEY_SECRET", OPTMAP_ENV, "ALIBABA_CLOUD_ACCESS_KEY_SECRET"},
    {"ALIBABA_CLOUD_SECURITY_TOKEN", OPTMAP_ENV, "ALIBABA_CLOUD_SECURITY_TOKEN"},
    {"HF_TOKEN", OPTMAP_ENV, "HF_TOKEN"},
    {"token", OPTMAP_TOKEN, NULL},
};

const struct optmap_entry *optmap_find(const char *key)
{
	for (unsigned i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(table[i].key, key) == 0)
			return &table[i];
	return NULL;
}

const char *optmap_key_var(enum optmap_kind kind, const char *scheme)
{
	static const char *const oss[] = {"OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET",
					  "OSS_SESSION_TOKEN"};
	static const char *const aws[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
					  "AWS_SESSION_TOKEN"};
	unsigned i;

	switch (kind) {
	case OPTMAP_KEY_ID:
		i = 0;
		break;
	case OPTMAP_KEY_SECRET:
		i = 1;
		break;
	case OPTMAP_KEY_TOKEN:
		i = 2;
		break;
	default:
		return NULL;
	}
	if (strcmp(scheme, "oss") == 0)
		return oss[i];
	if (strcmp(scheme, "s3") == 0)
		return aws[i];
	return NULL;
}

const char *optmap_secret_var(const char *name, const char *scheme)
{
	if (strcmp(scheme, "s3") == 0 && strcmp(name, "endpoint") == 0)
		return "AWS_ENDPOINT_URL_S3";
	if (strcmp(scheme, "s3") == 0 && strcmp(name, "region") == 0)
		return "AWS_REGION";
	if (strcmp(scheme, "hf") == 0 && strcmp(name, "endpoint") == 0)
		return "HF_ENDPOINT";
	return NULL;
}

const struct optmap_entry *optmap_all(unsigned *n)
{
	*n = sizeof(table) / sizeof(table[0]);
	return table;
}
