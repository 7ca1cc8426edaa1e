/* Parsing of the S3 XML answers we need: ListObjectsV2 pages and <Error>
 * bodies. A small strict reader, not a general XML parser: elements, text,
 * entities, CDATA, comments and the prolog; mismatched or unterminated tags,
 * unknown entities and over-deep nesting are errors (-EPROTO), never a crash.
 * The input is untrusted (it comes off the network); it has a fuzz target.
 */
#ifndef MODELFS_S3XML_H
#define MODELFS_S3XML_H

#include <stddef.h>

#include "backend.h"

/* S3 keys are at most 1024 bytes; a longer one is not a key. */
#define S3XML_KEY_MAX 1024

struct s3xml_page {
	int truncated;    /* IsTruncated */
	char *next_token; /* NextContinuationToken, heap, NULL when absent */
	size_t n_keys;    /* objects + common prefixes delivered */
	size_t key_bytes; /* their keys' lengths, summed */
	char root[64];    /* the document's root element, "" when none */
	/* <Contents> entries skipped, and the first one's key and why */
	size_t n_skipped;
	char skip_key[128];
	const char *skip_why; /* static string, NULL when none skipped */
};

/* Parse one ListObjectsV2 page, calling @cb for each <Contents> (with an
 * object) and each <CommonPrefixes><Prefix> (object NULL), in document order.
 * One bad entry does not spoil the page: a <Contents> without a Key or a
 * Size, with a Size that is not a number or above BACKEND_SIZE_MAX, an ETag
 * too long to hold, or a key longer than S3XML_KEY_MAX is skipped and
 * counted in @page (the caller warns). The root element must be
 * ListBucketResult: anything else (an <Error> or an HTML page sent with
 * status 200) is -EPROTO before any callback, with @page->root naming it.
 * @return 0, -EPROTO on malformed XML, a NUL inside a key or an IsTruncated
 * page without a token, -ENOMEM, or the callback's non-zero return. */
int s3xml_parse_list(const char *xml, size_t len, backend_list_cb cb, void *arg,
		     struct s3xml_page *page);

/* Extract <Error><Code> and <Message>. @return 0, or -EPROTO when @xml is not
 * an S3 error document (the buffers then hold ""). */
int s3xml_parse_error(const char *xml, size_t len, char *code, size_t code_len, char *msg,
		      size_t msg_len);
/* The same, and <RequestId> into @rid (what the store's support asks for). */
int s3xml_parse_error_rid(const char *xml, size_t len, char *code, size_t code_len, char *msg,
			  size_t msg_len, char *rid, size_t rid_len);

/* "2009-10-12T17:50:30.000Z" -> seconds since the epoch; -1 if malformed. */
long long s3xml_parse_time(const char *iso8601);

#endif
