/* Unit tests for backends/s3xml.c: ListObjectsV2 pages, <Error> bodies and
 * S3 timestamps.
 *
 * Every document is handed to the parser in a heap buffer of exactly its
 * length, without a terminating NUL, so a sanitizer build catches any read
 * past the end (the parser takes a length, not a C string).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "s3xml.h"

#define MAX_SEEN 16

/* What the list callback was given, in order. */
struct seen {
	size_t n;
	char *key[MAX_SEEN];
	int is_prefix[MAX_SEEN];
	uint64_t size[MAX_SEEN];
	int64_t mtime[MAX_SEEN];
	char etag[MAX_SEEN][BACKEND_ETAG_MAX];
	int stop_at;  /* return stop_ret on this call (1-based), 0 = never */
	int stop_ret;
	int calls;
};

static void seen_reset(struct seen *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->key[i]);
	memset(s, 0, sizeof(*s));
}

static int collect(void *arg, const char *key, const struct backend_object *obj)
{
	struct seen *s = arg;

	s->calls++;
	if (s->n < MAX_SEEN) {
		s->key[s->n] = strdup(key);
		s->is_prefix[s->n] = obj == NULL;
		if (obj) {
			s->size[s->n] = obj->size;
			s->mtime[s->n] = obj->mtime;
			snprintf(s->etag[s->n], sizeof(s->etag[s->n]), "%s", obj->etag);
			/* the object's key is the one passed alongside it */
			if (!obj->key || strcmp(obj->key, key) != 0)
				s->size[s->n] = UINT64_MAX;
		}
		s->n++;
	}
	if (s->stop_at && s->calls == s->stop_at)
		return s->stop_ret;
	return 0;
}

/* Parse the first @len bytes of @xml from an exact-size heap copy. */
static int parse_n(const char *xml, size_t len, struct seen *s, struct s3xml_page *page)
{
	char *copy = malloc(len ? len : 1);
	int err;

	if (!copy)
		return -ENOMEM;
	memcpy(copy, xml, len);
	err = s3xml_parse_list(copy, len, collect, s, page);
	free(copy);
	return err;
}

/* Parse @len bytes of @xml; for -EPROTO checks: a continuation token left
 * behind after an error turns the result into 12345. */
static int parse_bad_n(const char *xml, size_t len)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	int err = parse_n(xml, len, &s, &page);

	if (page.next_token) {
		if (err) {
			fprintf(stderr, "next_token left set after error on: %s\n", xml);
			err = 12345;
		}
		free(page.next_token);
	}
	seen_reset(&s);
	return err;
}

static int parse_bad(const char *xml)
{
	return parse_bad_n(xml, strlen(xml));
}

/* Does @xml parse, with its one <Contents> skipped for @why and no callback? */
static int parse_skipped(const char *xml, const char *why)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	int err = parse_n(xml, strlen(xml), &s, &page);
	int ok = err == 0 && s.calls == 0 && page.n_skipped == 1 && page.n_keys == 0 &&
		 page.skip_why && strcmp(page.skip_why, why) == 0;

	if (!ok)
		fprintf(stderr, "parse_skipped: err %d, calls %d, skipped %zu (%s) on: %.200s\n",
			err, s.calls, page.n_skipped, page.skip_why ? page.skip_why : "-", xml);
	free(page.next_token);
	seen_reset(&s);
	return ok;
}

/* Parse @xml expecting success; returns the error and fills @s. */
static int parse_ok(const char *xml, struct seen *s, struct s3xml_page *page)
{
	return parse_n(xml, strlen(xml), s, page);
}

#define LIST_HEAD                                                            \
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                       \
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
#define LIST_TAIL "</ListBucketResult>"
#define OBJ(key, size)                                                       \
	"<Contents><Key>" key "</Key>"                                       \
	"<LastModified>2021-01-01T00:00:00.000Z</LastModified>"              \
	"<ETag>&quot;0123&quot;</ETag><Size>" size "</Size></Contents>"

/* A realistic page, shaped like what AWS sends (one line per element). */
static const char page1[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
	"  <Name>models</Name>\n"
	"  <Prefix>llama/</Prefix>\n"
	"  <KeyCount>5</KeyCount>\n"
	"  <MaxKeys>1000</MaxKeys>\n"
	"  <Delimiter>/</Delimiter>\n"
	"  <IsTruncated>true</IsTruncated>\n"
	"  <ContinuationToken>prev-token</ContinuationToken>\n"
	"  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
	"</NextContinuationToken>\n"
	"  <Contents>\n"
	"    <Key>llama/config.json</Key>\n"
	"    <LastModified>2009-10-12T17:50:30.000Z</LastModified>\n"
	"    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>\n"
	"    <ChecksumAlgorithm>CRC32</ChecksumAlgorithm>\n"
	"    <Size>434234</Size>\n"
	"    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>"
	"<DisplayName>mtd@amazon.com</DisplayName></Owner>\n"
	"    <StorageClass>STANDARD</StorageClass>\n"
	"  </Contents>\n"
	"  <Contents>\n"
	"    <Key>llama/model-00001-of-00002.safetensors</Key>\n"
	"    <LastModified>2023-06-01T08:15:42.000Z</LastModified>\n"
	"    <ETag>\"d41d8cd98f00b204e9800998ecf8427e-1280\"</ETag>\n"
	"    <Size>21474836480</Size>\n"
	"    <StorageClass>STANDARD</StorageClass>\n"
	"  </Contents>\n"
	"  <Contents>\n"
	"    <Key>llama/empty</Key>\n"
	"    <LastModified>2038-01-19T03:14:08Z</LastModified>\n"
	"    <ETag>&quot;&quot;</ETag>\n"
	"    <Size>0</Size>\n"
	"  </Contents>\n"
	"  <CommonPrefixes>\n"
	"    <Prefix>llama/tokenizer/</Prefix>\n"
	"  </CommonPrefixes>\n"
	"  <CommonPrefixes><Prefix>llama/weights/</Prefix></CommonPrefixes>\n"
	"  <EncodingType>url</EncodingType>\n"
	"</ListBucketResult>";

static void test_realistic_page(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	int err = parse_ok(page1, &s, &page);

	CHECK(err == 0);
	CHECK(page.truncated == 1);
	CHECK_STR(page.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
	CHECK(page.n_keys == 5);
	CHECK(s.n == 5);
	if (s.n == 5) {
		CHECK_STR(s.key[0], "llama/config.json");
		CHECK(!s.is_prefix[0]);
		CHECK(s.size[0] == 434234);
		CHECK(s.mtime[0] == 1255369830);
		CHECK_STR(s.etag[0], "fba9dede5f27731c9771645a39863328");

		CHECK_STR(s.key[1], "llama/model-00001-of-00002.safetensors");
		CHECK(s.size[1] == 21474836480ULL); /* 20 GiB: more than 32 bits */
		CHECK(s.mtime[1] == 1685607342);
		CHECK_STR(s.etag[1], "d41d8cd98f00b204e9800998ecf8427e-1280");

		CHECK_STR(s.key[2], "llama/empty");
		CHECK(s.size[2] == 0);
		CHECK(s.mtime[2] == 2147483648LL); /* past 2038 */
		CHECK_STR(s.etag[2], "");

		CHECK_STR(s.key[3], "llama/tokenizer/");
		CHECK(s.is_prefix[3]);
		CHECK_STR(s.key[4], "llama/weights/");
		CHECK(s.is_prefix[4]);
	}
	free(page.next_token);
	seen_reset(&s);
}

static void test_last_page(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	const char *xml = LIST_HEAD "<IsTruncated>false</IsTruncated>" OBJ("a", "1") LIST_TAIL;

	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(page.truncated == 0);
	CHECK(page.next_token == NULL);
	CHECK(page.n_keys == 1);
	CHECK(s.n == 1 && s.mtime[0] == 1609459200 && s.size[0] == 1);
	seen_reset(&s);

	/* an empty listing: no Contents at all */
	xml = LIST_HEAD "<Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>"
		LIST_TAIL;
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(page.n_keys == 0 && s.calls == 0 && !page.truncated);
	seen_reset(&s);

	/* the biggest Size believed (2^62) */
	xml = LIST_HEAD OBJ("big", "4611686018427387904") LIST_TAIL;
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 1 && s.size[0] == BACKEND_SIZE_MAX);
	CHECK(page.n_skipped == 0 && page.skip_why == NULL);
	seen_reset(&s);

	/* LastModified missing or unparseable: mtime 0, not an error */
	xml = LIST_HEAD "<Contents><Key>k</Key><Size>5</Size>"
		"<LastModified>yesterday</LastModified></Contents>"
		"<Contents><Key>l</Key><Size>6</Size></Contents>" LIST_TAIL;
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 2 && s.mtime[0] == 0 && s.mtime[1] == 0);
	CHECK(s.n == 2 && s.etag[1][0] == '\0');
	seen_reset(&s);
}

static void test_entities(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	const char *xml =
		LIST_HEAD
		OBJ("a&amp;b&lt;c&gt;d&apos;e&quot;f&#233;g&#x1F600;h&#65;&#x42;&#x0063;", "1")
		OBJ("&#xe9;&#xE9;", "2")
		LIST_TAIL;

	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 2);
	if (s.n == 2) {
		CHECK_STR(s.key[0], "a&b<c>d'e\"f\xC3\xA9g\xF0\x9F\x98\x80hABc");
		CHECK_STR(s.key[1], "\xC3\xA9\xC3\xA9");
	}
	seen_reset(&s);

	/* every UTF-8 length: U+007F, U+0080, U+07FF, U+0800, U+FFFF, U+10000, U+10FFFF */
	xml = LIST_HEAD OBJ("&#x7F;&#x80;&#x7FF;&#x800;&#xFFFF;&#x10000;&#x10FFFF;", "1")
		LIST_TAIL;
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 1);
	if (s.n == 1)
		CHECK_STR(s.key[0], "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF"
				    "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF");
	seen_reset(&s);
}

static void test_cdata_comments_selfclose(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	const char *xml =
		"<!-- before the prolog is not allowed in XML, but after it is -->"
		"<ListBucketResult>"
		"<!-- a comment with <Contents><Key>fake</Key></Contents> inside -->"
		"<Contents><Key><![CDATA[x<y>&amp;]]></Key><Size>1</Size><Owner/>"
		"<Owner /></Contents>"
		"<Contents><Key>pre<![CDATA[&]]>post</Key><Size>2</Size><ETag/></Contents>"
		"<Contents><Key>a<!-- mid -->b</Key><Size>3</Size></Contents>"
		"<Contents><Key/><Size>4</Size></Contents>"
		"<CommonPrefixes><Prefix><![CDATA[p&q/]]></Prefix></CommonPrefixes>"
		"<IsTruncated/>"
		"</ListBucketResult>"
		"<!-- trailing -->\n";

	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 5);
	if (s.n == 5) {
		CHECK_STR(s.key[0], "x<y>&amp;");
		CHECK(s.size[0] == 1);
		CHECK_STR(s.key[1], "pre&post");
		CHECK_STR(s.etag[1], "");
		CHECK_STR(s.key[2], "ab");
		CHECK_STR(s.key[3], "");
		CHECK(s.size[3] == 4);
		CHECK_STR(s.key[4], "p&q/");
		CHECK(s.is_prefix[4]);
	}
	CHECK(page.truncated == 0);
	seen_reset(&s);

	/* a DOCTYPE without an internal subset is fine */
	xml = "<?xml version=\"1.0\"?>\n<!DOCTYPE ListBucketResult>\n<ListBucketResult>"
		OBJ("d", "1") LIST_TAIL;
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 1);
	seen_reset(&s);
}

static void test_odd_keys(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	const char *xml = LIST_HEAD
		OBJ("dir with space/a+b%20c=d&amp;e~f", "1")
		OBJ("\xC3\xBCn\xC3\xAF/\xE6\xA8\xA1\xE5\x9E\x8B.bin", "2")
		OBJ("!$'()*,;:@[]^`{|}", "3")
		LIST_TAIL;

	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 3);
	if (s.n == 3) {
		CHECK_STR(s.key[0], "dir with space/a+b%20c=d&e~f");
		CHECK_STR(s.key[1], "\xC3\xBCn\xC3\xAF/\xE6\xA8\xA1\xE5\x9E\x8B.bin");
		CHECK_STR(s.key[2], "!$'()*,;:@[]^`{|}");
	}
	seen_reset(&s);

	/* blanks in a key are kept as they are: keys are not trimmed */
	xml = LIST_HEAD OBJ(" lead and trail ", "1") LIST_TAIL;
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 1 && strcmp(s.key[0], " lead and trail ") == 0);
	seen_reset(&s);

	/* ETag of the longest size that fits, and one byte more */
	{
		char big[1024], tag[BACKEND_ETAG_MAX + 1];
		memset(tag, 'e', sizeof(tag));
		tag[BACKEND_ETAG_MAX - 1] = '\0';
		snprintf(big, sizeof(big), LIST_HEAD "<Contents><Key>k</Key><Size>1</Size>"
			 "<ETag>\"%s\"</ETag></Contents>" LIST_TAIL, tag);
		CHECK(parse_ok(big, &s, &page) == 0);
		CHECK(s.n == 1 && strlen(s.etag[0]) == BACKEND_ETAG_MAX - 1);
		seen_reset(&s);
		tag[BACKEND_ETAG_MAX - 1] = 'e';
		tag[BACKEND_ETAG_MAX] = '\0';
		snprintf(big, sizeof(big), LIST_HEAD "<Contents><Key>k</Key><Size>1</Size>"
			 "<ETag>\"%s\"</ETag></Contents>" LIST_TAIL, tag);
		CHECK(parse_skipped(big, "ETag longer than 127 bytes"));
	}
}

static void test_truncated_every_length(void)
{
	size_t len = strlen(page1), bad = 0, i;
	struct s3xml_page page = {0};
	struct seen s = {0};

	for (i = 0; i < len; i++) {
		int err = parse_n(page1, i, &s, &page);
		if (err != -EPROTO || page.next_token) {
			if (bad++ < 5)
				fprintf(stderr, "prefix of %zu bytes: got %d, token %s\n", i, err,
					page.next_token ? page.next_token : "(null)");
			free(page.next_token);
		}
		seen_reset(&s);
	}
	CHECK(bad == 0);
	/* and the whole thing still parses */
	CHECK(parse_n(page1, len, &s, &page) == 0);
	free(page.next_token);
	seen_reset(&s);
}

static void test_malformed(void)
{
	char deep[1024];
	size_t o;
	int i;

	CHECK(parse_bad("") == -EPROTO);
	CHECK(parse_bad("   \n\t") == -EPROTO);
	CHECK(parse_bad("<?xml version=\"1.0\"?>") == -EPROTO);
	CHECK(parse_bad("<") == -EPROTO);
	CHECK(parse_bad("<>") == -EPROTO);
	CHECK(parse_bad("< a></a>") == -EPROTO);
	CHECK(parse_bad("</a>") == -EPROTO);
	CHECK(parse_bad("<a>") == -EPROTO);
	CHECK(parse_bad("<a></b>") == -EPROTO);
	CHECK(parse_bad("<ListBucketResult><Name>x</Nam></ListBucketResult>") == -EPROTO);
	CHECK(parse_bad("<ListBucketResult><Name>x</Name></ListBucketResul>") == -EPROTO);
	CHECK(parse_bad("<a><b></a></b>") == -EPROTO);
	/* two roots, text outside the root */
	CHECK(parse_bad("<a></a><b></b>") == -EPROTO);
	CHECK(parse_bad("<a/><a/>") == -EPROTO);
	CHECK(parse_bad("x<a></a>") == -EPROTO);
	CHECK(parse_bad("<a></a>x") == -EPROTO);
	CHECK(parse_bad("<a></a>&amp;") == -EPROTO);
	CHECK(parse_bad("<![CDATA[x]]><a></a>") == -EPROTO);
	/* a prolog after the root has started, unterminated constructs */
	CHECK(parse_bad("<a><?xml version=\"1.0\"?></a>") == -EPROTO);
	CHECK(parse_bad("<a></a><?xml version=\"1.0\"?>") == -EPROTO);
	CHECK(parse_bad("<a><!-- never closed </a>") == -EPROTO);
	CHECK(parse_bad("<a><![CDATA[ never closed </a>") == -EPROTO);
	CHECK(parse_bad("<?xml version=\"1.0\"<a></a>") == -EPROTO);
	/* no internal DTD subsets (entity expansion attacks) */
	CHECK(parse_bad("<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>") == -EPROTO);
	/* entities */
	CHECK(parse_bad(LIST_HEAD OBJ("a&nbsp;b", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("a&#0;b", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("a&#x0;b", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#x110000;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#xD800;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#99999999999999999999;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#x;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#12a;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&#xG1;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("&;", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("a&amp b", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("a & b", "1") LIST_TAIL) == -EPROTO);
	CHECK(parse_bad(LIST_HEAD OBJ("AT&T", "1") LIST_TAIL) == -EPROTO);
	/* (a bad Size, a missing Key or Size: see test_skipped_entries) */
	/* a NUL inside a key, raw or in CDATA */
	{
		static const char nul1[] = LIST_HEAD "<Contents><Key><![CDATA[a\0b]]></Key>"
			"<Size>1</Size></Contents>" LIST_TAIL;
		static const char nul2[] = LIST_HEAD "<Contents><Key>a\0b</Key>"
			"<Size>1</Size></Contents>" LIST_TAIL;
		CHECK(parse_bad_n(nul1, sizeof(nul1) - 1) == -EPROTO);
		CHECK(parse_bad_n(nul2, sizeof(nul2) - 1) == -EPROTO);
	}
	/* IsTruncated true without a token would loop for ever */
	CHECK(parse_bad(LIST_HEAD "<IsTruncated>true</IsTruncated>" OBJ("k", "1") LIST_TAIL) ==
	      -EPROTO);
	/* element names: 63 characters are fine, 64 are too long */
	for (int nlen = 63; nlen <= 64; nlen++) {
		char name[65];
		memset(name, 'n', (size_t)nlen);
		name[nlen] = '\0';
		snprintf(deep, sizeof(deep), "<ListBucketResult><%s></%s></ListBucketResult>", name,
			 name);
		if (nlen == 63) {
			struct seen s = {0};
			struct s3xml_page page = {0};
			CHECK(parse_ok(deep, &s, &page) == 0);
			seen_reset(&s);
		} else {
			CHECK(parse_bad(deep) == -EPROTO);
		}
	}

	/* nesting: 16 levels are fine, 17 are not */
	for (int levels = 16; levels <= 17; levels++) {
		struct seen s = {0};
		struct s3xml_page page = {0};
		o = (size_t)snprintf(deep, sizeof(deep), "<ListBucketResult>");
		for (i = 1; i < levels; i++)
			o += (size_t)snprintf(deep + o, sizeof(deep) - o, "<d%d>", i);
		for (i = levels - 1; i >= 1; i--)
			o += (size_t)snprintf(deep + o, sizeof(deep) - o, "</d%d>", i);
		o += (size_t)snprintf(deep + o, sizeof(deep) - o, "</ListBucketResult>");
		if (levels == 16) {
			CHECK(parse_ok(deep, &s, &page) == 0);
			CHECK(s.calls == 0);
			free(page.next_token);
			seen_reset(&s);
		} else {
			CHECK(parse_bad(deep) == -EPROTO);
		}
	}
	/* and much deeper, self-closing at the bottom */
	o = 0;
	for (i = 0; i < 100; i++)
		o += (size_t)snprintf(deep + o, sizeof(deep) - o, "<x>");
	o += (size_t)snprintf(deep + o, sizeof(deep) - o, "<y/>");
	CHECK(parse_bad(deep) == -EPROTO);
}

/* Cases the header's contract implies but that are easy to get wrong. */
static void test_malformed_edges(void)
{
	/* an empty token is no token: following it would restart the listing */
	CHECK(parse_bad(LIST_HEAD "<IsTruncated>true</IsTruncated>"
			"<NextContinuationToken></NextContinuationToken>" OBJ("k", "1")
			LIST_TAIL) == -EPROTO);
	/* a NUL inside a common prefix is as bad as one inside a key */
	{
		static const char nul[] = LIST_HEAD "<CommonPrefixes><Prefix><![CDATA[a\0b/]]>"
			"</Prefix></CommonPrefixes>" LIST_TAIL;
		CHECK(parse_bad_n(nul, sizeof(nul) - 1) == -EPROTO);
	}
}

static void test_callback_stops(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};
	int err;

	s.stop_at = 2;
	s.stop_ret = 42;
	err = parse_ok(page1, &s, &page);
	CHECK(err == 42);
	CHECK(s.calls == 2);
	CHECK(page.next_token == NULL);
	free(page.next_token);
	seen_reset(&s);

	/* stopping on a common prefix, with an errno value */
	s.stop_at = 4;
	s.stop_ret = -EIO;
	err = parse_ok(page1, &s, &page);
	CHECK(err == -EIO);
	CHECK(s.calls == 4);
	CHECK(s.n == 4 && s.is_prefix[3]);
	free(page.next_token);
	seen_reset(&s);

	s.stop_at = 1;
	s.stop_ret = 1;
	CHECK(parse_ok(page1, &s, &page) == 1);
	CHECK(s.calls == 1);
	free(page.next_token);
	seen_reset(&s);
}

static int parse_error_n(const char *xml, char *code, size_t cl, char *msg, size_t ml)
{
	size_t len = strlen(xml);
	char *copy = malloc(len ? len : 1);
	int err;

	memcpy(copy, xml, len);
	err = s3xml_parse_error(copy, len, code, cl, msg, ml);
	free(copy);
	return err;
}

static void test_error_doc(void)
{
	static const char doc[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<Error>\n"
		"  <Code>NoSuchBucket</Code>\n"
		"  <Message>The specified bucket does not exist</Message>\n"
		"  <BucketName>nope</BucketName>\n"
		"  <RequestId>4442587FB7D0A2F9</RequestId>\n"
		"  <HostId>fHs5mw+ZK2bV1yhEqT3ZQ4HhKcPr8s3wAXwHMsv2fY0=</HostId>\n"
		"</Error>\n";
	char code[64], msg[128], small[5];

	CHECK(parse_error_n(doc, code, sizeof(code), msg, sizeof(msg)) == 0);
	CHECK_STR(code, "NoSuchBucket");
	CHECK_STR(msg, "The specified bucket does not exist");
	{
		char rid[32] = "x";
		CHECK(s3xml_parse_error_rid(doc, strlen(doc), code, sizeof(code), msg, sizeof(msg),
					    rid, sizeof(rid)) == 0);
		CHECK_STR(rid, "4442587FB7D0A2F9");
		CHECK(s3xml_parse_error_rid("<Error><Code>A</Code></Error>", 29, code, sizeof(code),
					    msg, sizeof(msg), rid, sizeof(rid)) == 0);
		CHECK_STR(rid, ""); /* none: empty, not the last one's */
	}

	/* truncated to the buffers */
	CHECK(parse_error_n(doc, small, sizeof(small), msg, 8) == 0);
	CHECK_STR(small, "NoSu");
	CHECK_STR(msg, "The spe");

	CHECK(parse_error_n("<Error><Code>AccessDenied</Code><Message>It&apos;s &lt;denied&gt;"
			    "</Message></Error>", code, sizeof(code), msg, sizeof(msg)) == 0);
	CHECK_STR(code, "AccessDenied");
	CHECK_STR(msg, "It's <denied>");

	/* an Error with no Message */
	strcpy(msg, "junk");
	CHECK(parse_error_n("<Error><Code>SlowDown</Code></Error>", code, sizeof(code), msg,
			    sizeof(msg)) == 0);
	CHECK_STR(code, "SlowDown");
	CHECK_STR(msg, "");

	/* Code deeper than Error's children is not the error code */
	CHECK(parse_error_n("<Error><Detail><Code>inner</Code></Detail><Code>outer</Code>"
			    "</Error>", code, sizeof(code), msg, sizeof(msg)) == 0);
	CHECK_STR(code, "outer");

	/* not error documents: buffers left "" */
	strcpy(code, "junk");
	strcpy(msg, "junk");
	CHECK(parse_error_n(page1, code, sizeof(code), msg, sizeof(msg)) == -EPROTO);
	CHECK_STR(code, "");
	CHECK_STR(msg, "");
	strcpy(code, "junk");
	CHECK(parse_error_n("<Wrap><Error><Code>X</Code></Error></Wrap>", code, sizeof(code),
			    msg, sizeof(msg)) == -EPROTO);
	CHECK_STR(code, "");
	CHECK(parse_error_n("<html><body>502 Bad Gateway</body></html>", code, sizeof(code),
			    msg, sizeof(msg)) == -EPROTO);
	CHECK(parse_error_n("Bad Gateway", code, sizeof(code), msg, sizeof(msg)) == -EPROTO);
	CHECK_STR(code, "");
	CHECK(parse_error_n("", code, sizeof(code), msg, sizeof(msg)) == -EPROTO);
	CHECK(s3xml_parse_error(NULL, 0, code, sizeof(code), msg, sizeof(msg)) == -EPROTO);
	/* malformed Error: the code seen before the damage is not reported */
	strcpy(code, "junk");
	CHECK(parse_error_n("<Error><Code>NoSuchKey</Code><Message>x</Mess></Error>", code,
			    sizeof(code), msg, sizeof(msg)) == -EPROTO);
	CHECK_STR(code, "");
	CHECK_STR(msg, "");
	CHECK(parse_error_n("<Error><Code>NoSuchKey</Code>", code, sizeof(code), msg,
			    sizeof(msg)) == -EPROTO);
	CHECK_STR(code, "");
	/* every prefix of the error document fails cleanly (up to the root's end) */
	{
		size_t bad = 0, end = strlen(doc) - 1; /* without the final newline */
		for (size_t i = 0; i < end; i++) {
			char *copy = malloc(i ? i : 1);
			memcpy(copy, doc, i);
			if (s3xml_parse_error(copy, i, code, sizeof(code), msg, sizeof(msg)) !=
				    -EPROTO || code[0] || msg[0])
				bad++;
			free(copy);
		}
		CHECK(bad == 0);
	}
}

static void test_time(void)
{
	CHECK(s3xml_parse_time("2009-10-12T17:50:30.000Z") == 1255369830);
	CHECK(s3xml_parse_time("2009-10-12T17:50:30Z") == 1255369830);
	CHECK(s3xml_parse_time("2009-10-12T17:50:30.123456789Z") == 1255369830);
	CHECK(s3xml_parse_time("1970-01-01T00:00:00.000Z") == 0);
	CHECK(s3xml_parse_time("1970-01-01T00:00:01Z") == 1);
	CHECK(s3xml_parse_time("2024-02-29T12:00:00.000Z") == 1709208000);
	CHECK(s3xml_parse_time("2038-01-19T03:14:08.000Z") == 2147483648LL);

	CHECK(s3xml_parse_time(NULL) == -1);
	CHECK(s3xml_parse_time("") == -1);
	CHECK(s3xml_parse_time("garbage") == -1);
	CHECK(s3xml_parse_time("2009-10-12") == -1);
	CHECK(s3xml_parse_time("2009-10-12T17:50") == -1);
	CHECK(s3xml_parse_time("2009-10-12 17:50:30Z") == -1);
	CHECK(s3xml_parse_time("2009-13-12T17:50:30Z") == -1);
	CHECK(s3xml_parse_time("2009-10-32T17:50:30Z") == -1);
	CHECK(s3xml_parse_time("2009-10-12T24:50:30Z") == -1);
	CHECK(s3xml_parse_time("2009-10-12T17:60:30Z") == -1);
	CHECK(s3xml_parse_time("2009-10-12T17:50:30+01:00") == -1);
	CHECK(s3xml_parse_time("2009-10-12T17:50:30.000X") == -1);
	CHECK(s3xml_parse_time("Mon, 12 Oct 2009 17:50:30 GMT") == -1);
}

/* Trailing garbage after the 'Z' is as malformed as garbage instead of it. */
static void test_time_trailing(void)
{
	CHECK(s3xml_parse_time("2009-10-12T17:50:30.000Zjunk") == -1);
	CHECK(s3xml_parse_time("2009-10-12T17:50:30ZZ") == -1);
}

/* One bad entry is skipped (and counted, the first named), not the page. */
static void test_skipped_entries(void)
{
	static const char *const bad_sizes[] = {"abc", "-1", "+1", "", "12abc", "1.5", " 1",
						"18446744073709551616"};
	struct seen s = {0};
	struct s3xml_page page = {0};
	char key[S3XML_KEY_MAX + 2], *xml;
	size_t xml_len = S3XML_KEY_MAX + 512;

	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		char doc[512];
		snprintf(doc, sizeof(doc), LIST_HEAD OBJ("k", "%s") LIST_TAIL, bad_sizes[i]);
		CHECK(parse_skipped(doc, "Size not a number of bytes"));
	}
	CHECK(parse_skipped(LIST_HEAD "<Contents><Key>k</Key><Size/></Contents>" LIST_TAIL,
			    "Size not a number of bytes"));
	CHECK(parse_skipped(LIST_HEAD OBJ("k", "4611686018427387905") LIST_TAIL,
			    "Size above 2^62"));
	CHECK(parse_skipped(LIST_HEAD OBJ("k", "18446744073709551615") LIST_TAIL,
			    "Size above 2^62"));
	CHECK(parse_skipped(LIST_HEAD "<Contents><Size>1</Size></Contents>" LIST_TAIL, "no Key"));
	CHECK(parse_skipped(LIST_HEAD "<Contents/>" LIST_TAIL, "no Key"));
	CHECK(parse_skipped(LIST_HEAD "<Contents><Key>k</Key></Contents>" LIST_TAIL, "no Size"));

	/* the bad one between two good ones: the good ones arrive, in order */
	CHECK(parse_ok(LIST_HEAD OBJ("a", "1") OBJ("bad", "-1") OBJ("c", "3") LIST_TAIL, &s,
		       &page) == 0);
	CHECK(s.n == 2 && strcmp(s.key[0], "a") == 0 && strcmp(s.key[1], "c") == 0);
	CHECK(page.n_keys == 2 && page.n_skipped == 1);
	CHECK_STR(page.skip_key, "bad");
	seen_reset(&s);

	/* keys: 1024 bytes are fine, 1025 are not an S3 key */
	xml = malloc(xml_len);
	CHECK(xml != NULL);
	if (!xml)
		return;
	memset(key, 'k', sizeof(key));
	key[S3XML_KEY_MAX] = '\0';
	snprintf(xml, xml_len, LIST_HEAD OBJ("%s", "1") LIST_TAIL, key);
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.n == 1 && page.n_skipped == 0 && page.key_bytes == S3XML_KEY_MAX);
	seen_reset(&s);
	key[S3XML_KEY_MAX] = 'k';
	key[S3XML_KEY_MAX + 1] = '\0';
	snprintf(xml, xml_len, LIST_HEAD OBJ("%s", "1") LIST_TAIL, key);
	CHECK(parse_skipped(xml, "key longer than S3's 1024 bytes"));
	snprintf(xml, xml_len, LIST_HEAD "<CommonPrefixes><Prefix>%s/</Prefix></CommonPrefixes>"
		 LIST_TAIL, key);
	CHECK(parse_ok(xml, &s, &page) == 0);
	CHECK(s.calls == 0 && page.n_skipped == 1);
	seen_reset(&s);
	free(xml);
}

/* Only a ListBucketResult is a listing; what else comes with status 200 is
 * named, and no callback ever runs for it. */
static void test_root_element(void)
{
	struct seen s = {0};
	struct s3xml_page page = {0};

	CHECK(parse_ok("<Error><Code>InternalError</Code><Message>x</Message>"
		       "<Contents><Key>k</Key><Size>1</Size></Contents></Error>", &s,
		       &page) == -EPROTO);
	CHECK(s.calls == 0);
	CHECK_STR(page.root, "Error");
	CHECK(page.next_token == NULL);
	seen_reset(&s);

	CHECK(parse_ok("<!DOCTYPE html><html><head><title>Sign in</title></head>"
		       "<body><p>Please sign in.</p></body></html>", &s, &page) == -EPROTO);
	CHECK(s.calls == 0);
	CHECK_STR(page.root, "html");
	seen_reset(&s);

	CHECK(parse_ok("<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>", &s,
		       &page) == -EPROTO);
	CHECK_STR(page.root, "ListAllMyBucketsResult");
	seen_reset(&s);

	CHECK(parse_ok("<ListBucketResult/>", &s, &page) == 0);
	CHECK_STR(page.root, "ListBucketResult");
	CHECK(s.calls == 0 && page.n_keys == 0);
	seen_reset(&s);
}

int main(void)
{
	test_realistic_page();
	test_last_page();
	test_entities();
	test_cdata_comments_selfclose();
	test_odd_keys();
	test_truncated_every_length();
	test_malformed();
	test_malformed_edges();
	test_skipped_entries();
	test_root_element();
	test_callback_stops();
	test_error_doc();
	test_time();
	test_time_trailing();
	return check_done();
}
