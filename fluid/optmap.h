/* The option keys `modelfs fluid` takes, wherever Fluid puts them (a
 * mount's "options" and "encryptOptions", "runtimeOptions", $MOUNT_OPTIONS,
 * -o): modelfs's own -o names, and the spellings Fluid users already have
 * in their Datasets (JindoFS's fs.oss.*, Hadoop's fs.s3a.*, Alluxio's
 * aws.*, ossfs's akId/akSecret), each mapped to what modelfs reads: an -o
 * option, or, for credentials, a variable of the daemon's environment.
 *
 * The table mirrors fs/opts.c and the backends' option lists; the
 * integration test (t_fluid.sh) checks every option `modelfs --help` lists
 * against it, so a new modelfs option missing here fails a test, not a
 * user. Constant data only: safe from any thread.
 */
#ifndef MODELFS_FLUID_OPTMAP_H
#define MODELFS_FLUID_OPTMAP_H

enum optmap_kind {
	OPTMAP_VALUE,      /* -o NAME=VALUE */
	OPTMAP_FLAG,       /* -o NAME, no value ("" or "true"; "false" drops it) */
	OPTMAP_PATH,       /* -o NAME=PATH of a file the daemon reads: a secret's path stays a path */
	OPTMAP_KEY_ID,     /* an access key id: the source's variable (optmap_key_var) */
	OPTMAP_KEY_SECRET, /* its secret */
	OPTMAP_KEY_TOKEN,  /* a session / security token */
	OPTMAP_ENV,        /* a credential under its variable's own name (AWS_ACCESS_KEY_ID, ...) */
	OPTMAP_TOKEN,      /* a bearer token: token_file=PATH, or HF_TOKEN for hf:// */
};

struct optmap_entry {
	const char *key;       /* as users write it */
	enum optmap_kind kind;
	const char *name;      /* modelfs's option (VALUE, FLAG, PATH) or the variable (ENV) */
};

/* The entry for @key (exact, case-sensitive, as modelfs's options are), or
 * NULL for a key nobody takes. */
const struct optmap_entry *optmap_find(const char *key);

/* The variable a credential of @kind (OPTMAP_KEY_*) goes to for sources of
 * @scheme ("oss", "s3", ...): OSS's for oss://, AWS's for s3:// (an
 * S3-compatible store; the CSI plugin maps ossfs's names the same way).
 * @return NULL where the source takes no keys (file://, http(s)://, hf://). */
const char *optmap_key_var(enum optmap_kind kind, const char *scheme);

/* The variable that can carry modelfs option @name for @scheme when its
 * value comes from a secret (it must not go on a command line):
 * endpoint= and region= of s3://, endpoint= of hf://. NULL: none. */
const char *optmap_secret_var(const char *name, const char *scheme);

/* Every entry, for --help: @return the table, *@n its length. */
const struct optmap_entry *optmap_all(unsigned *n);

#endif
