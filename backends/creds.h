/* AWS credentials, looked up in the order the AWS tools use:
 *   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN]
 *   2. @creds_file (shared-credentials INI format), if given
 *   3. $AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials, if it exists
 * in profile @profile (else $AWS_PROFILE, else "default"). Nothing found means
 * anonymous requests. Secrets are never logged. */
#ifndef MODELFS_CREDS_H
#define MODELFS_CREDS_H

#include <stddef.h>

struct creds {
	char *access_key;    /* NULL: anonymous */
	char *secret_key;
	char *session_token; /* NULL: none */
	char source[300];    /* where they came from, for the log ("environment", a path) */
};

/* @return 0 (found or anonymous), or -errno with one line in @msg: a given
 * @creds_file that cannot be read (-ENOENT, -EACCES), a profile missing from
 * it (-ENOENT), or a profile without both keys (-EINVAL). */
int creds_load(const char *creds_file, const char *profile, struct creds *out, char *msg,
	       size_t msg_len);

/* Parse shared-credentials text for @profile; used by creds_load and tests.
 * @return 0, -ENOENT (no such profile), -EINVAL (profile lacks a key). */
int creds_parse(const char *text, const char *profile, struct creds *out);

void creds_free(struct creds *c);

#endif
