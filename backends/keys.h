/* The keys a store's requests are signed with, when they change while the
 * mount lives: temporary credentials (STS, instance metadata) that expire,
 * and secret files that Kubernetes rotates.
 *
 * A keyring holds the current keyset (immutable, reference-counted: a
 * signer takes one, signs, puts it back, without a lock held while it
 * signs) and a source that fetches the next one. The refresh runs ahead of
 * the expiry, by a third of the keys' lifetime and at most 5 minutes, in
 * whichever signer first finds it due; the others go on signing with the
 * keys they have, which are still good. So the switch costs no request an
 * error and no reader a wait, unless the keys did expire (a source that
 * was down): then signers wait for the fetch under way (at most its
 * timeout). A failed refresh keeps the old keys and is tried again soon
 * (a quarter of what is left, 1 to 60 s).
 *
 * Thread safety: all functions but keyring_close may be called from any
 * thread; the ring's lock guards its keyset pointer and refresh times.
 */
#ifndef MODELFS_KEYS_H
#define MODELFS_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "creds.h"

struct keyset {
	const char *access_key, *secret_key, *session_token; /* token may be NULL */
};

/* Where new keys come from. fetch: 0 with @out filled (taken over) and
 * *@expires_ms (wall clock, ms since the epoch; 0: they do not expire),
 * 1 when the keys are the ones fetched last (a file that did not change),
 * or -errno with one line in @msg (never a secret). */
struct key_source {
	const char *what; /* for the log: "AssumeRoleWithWebIdentity", a path */
	int (*fetch)(void *arg, struct creds *out, int64_t *expires_ms, char *msg,
		     size_t msg_len);
	void (*release)(void *arg);
	void *arg;
	unsigned recheck_ms; /* keys without an expiry: looked at again this often (0: never) */
};

struct keyring;

/* A ring over @src (copied; its arg is the ring's from now on, released by
 * keyring_close, or here on failure), after a first fetch: that one must
 * work. @return 0, or -errno with @msg. */
int keyring_open(const struct key_source *src, struct keyring **out, char *msg, size_t msg_len);
/* A ring of fixed keys, taken over from @c (NULL access_key: anonymous). */
int keyring_fixed(struct creds *c, struct keyring **out);
void keyring_close(struct keyring *r);

/* The keys to sign with now, or NULL: anonymous. keyring_put it after. */
const struct keyset *keyring_get(struct keyring *r);
void keyring_put(struct keyring *r, const struct keyset *k);

/* When a refresh is due for keys fetched at @now_ms that expire at
 * @expires_ms (both wall clock): for the tests. */
int64_t keys_refresh_at(int64_t now_ms, int64_t expires_ms);

#endif
