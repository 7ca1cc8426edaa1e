/* Fluid ThinRuntime's config.json, read into what `modelfs fluid` runs:
 * one modelfs command line and one set of environment variables per mount.
 *
 * Fluid writes the file (a ConfigMap, one line of JSON) from the Dataset
 * and the ThinRuntime: {"mounts": [{"mountPoint", "name", "path",
 * "options", ...}], "targetPath", "runtimeOptions", "accessModes", ...}.
 * Secrets come as file paths (/etc/fluid/secrets/SECRET/KEY: the Secret
 * is mounted there) in a mount's "options", or as plain values when Fluid
 * keeps the config in a Secret; CacheRuntime's per-mount "encryptOptions"
 * (a map of paths, or the Dataset's [{name, valueFrom.secretKeyRef}]) is
 * read too. Every value that is a secret goes to the environment only,
 * never to an argument, and no message here quotes a value.
 */
#ifndef MODELFS_FLUID_CONFIG_H
#define MODELFS_FLUID_CONFIG_H

#include <stddef.h>

/* What the config is read with, besides the file. */
struct fluid_inputs {
	const char *path;            /* config.json */
	const char *secrets_dir;     /* where Fluid mounts Secrets: /etc/fluid/secrets */
	char *const *cli_opts;       /* -o items of the command line, split at commas */
	size_t n_cli_opts;
	const char *mount_options;   /* $MOUNT_OPTIONS ("k=v,k2"), NULL: none */
	const char *mount_point;     /* $MOUNT_POINT: targetPath when the file has none */
};

struct fluid_mount {
	char *label;          /* for messages: mounts[I] ("NAME") */
	char *source;         /* modelfs's SOURCE (local:// given as file://) */
	char *target;         /* an absolute path: targetPath, or targetPath/PATH-or-NAME */
	char **opts;          /* the -o items, "name" or "name=value" (commas escaped) */
	size_t n_opts;
	char **env;           /* "VAR=VALUE": secrets, for the daemon's environment only */
	size_t n_env;
	char **env_drop;      /* inherited variables the daemon must not see (names) */
	size_t n_env_drop;
	unsigned term_grace_s; /* modelfs's term_grace for it (25 unless given) */
};

struct fluid_config {
	char *target_path;
	struct fluid_mount *mounts;
	size_t n_mounts;
};

/* Read and check @in->path. @return 0 with *@out (fluid_config_free), or
 * -EINVAL for a bad config (unreadable file, bad JSON, no mounts, a mount
 * without mountPoint, an unknown scheme or option key, an unreadable
 * secret, ...) or -ENOMEM, with one line in @msg saying what and where
 * (never a secret's value). */
int fluid_config_load(const struct fluid_inputs *in, struct fluid_config **out, char *msg,
		      size_t msg_len);

/* Frees @c and wipes the secrets it holds. NULL: nothing. */
void fluid_config_free(struct fluid_config *c);

#endif
