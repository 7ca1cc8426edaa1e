/* Unit tests for backends/uri.c: percent-encoding (what SigV4 signs must be
 * what is sent, byte for byte) and endpoint URL parsing. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "uri.h"

static int is_unreserved(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static void test_encode_basic(void)
{
	char out[256];

	CHECK(uri_encode("", 0, out, sizeof(out)) == 0);
	CHECK_STR(out, "");
	CHECK(uri_encode("AZaz09-_.~", 0, out, sizeof(out)) == 10);
	CHECK_STR(out, "AZaz09-_.~");

	CHECK(uri_encode("models/llama 3/config.json", 1, out, sizeof(out)) == 28);
	CHECK_STR(out, "models/llama%203/config.json");
	CHECK(uri_encode("models/llama 3/config.json", 0, out, sizeof(out)) == 32);
	CHECK_STR(out, "models%2Fllama%203%2Fconfig.json");
	CHECK(uri_encode("/", 1, out, sizeof(out)) == 1);
	CHECK_STR(out, "/");
	CHECK(uri_encode("//", 0, out, sizeof(out)) == 6);
	CHECK_STR(out, "%2F%2F");

	/* the characters S3 keys commonly carry that must be encoded */
	CHECK(uri_encode("a+b=c&d%e f", 1, out, sizeof(out)) > 0);
	CHECK_STR(out, "a%2Bb%3Dc%26d%25e%20f");
	CHECK(uri_encode(" !\"#$%&'()*+,/:;<=>?@[\\]^`{|}", 0, out, sizeof(out)) == 29 * 3);
	CHECK_STR(out, "%20%21%22%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3C%3D%3E%3F%40"
		       "%5B%5C%5D%5E%60%7B%7C%7D");

	/* UTF-8 bytes, upper-case hex */
	CHECK(uri_encode("\xC3\xA9", 0, out, sizeof(out)) == 6);
	CHECK_STR(out, "%C3%A9");
	CHECK(uri_encode("caf\xC3\xA9/\xF0\x9F\x98\x80", 1, out, sizeof(out)) == 22);
	CHECK_STR(out, "caf%C3%A9/%F0%9F%98%80");
	CHECK(uri_encode("\x7F\x80\xFF\x01\t\n", 0, out, sizeof(out)) == 18);
	CHECK_STR(out, "%7F%80%FF%01%09%0A");
}

/* Every byte value, one at a time, both ways. */
static void test_encode_every_byte(void)
{
	int bad = 0;

	for (int c = 1; c < 256; c++) {
		for (int ks = 0; ks <= 1; ks++) {
			char in[2] = {(char)c, '\0'}, out[8], want[8];
			int n = uri_encode(in, ks, out, sizeof(out));
			if (is_unreserved(c) || (ks && c == '/'))
				snprintf(want, sizeof(want), "%c", c);
			else
				snprintf(want, sizeof(want), "%%%02X", c);
			if (n != (int)strlen(want) || strcmp(out, want) != 0) {
				if (bad++ < 5)
					fprintf(stderr, "byte 0x%02X keep_slash=%d: got %d \"%s\""
						", want \"%s\"\n", c, ks, n, out, want);
			}
		}
	}
	CHECK(bad == 0);
}

/* For every buffer size up to the one needed: -ENAMETOOLONG, and nothing
 * written past the size given; at the exact size, the full answer. */
static void check_boundary(const char *in, int keep_slash, const char *want)
{
	size_t need = strlen(want) + 1, bad = 0;
	char buf[128];

	for (size_t n = 0; n <= need; n++) {
		int r;
		memset(buf, 'Z', sizeof(buf));
		r = uri_encode(in, keep_slash, buf, n);
		if (n < need) {
			if (r != -ENAMETOOLONG)
				bad++;
		} else if (r != (int)strlen(want) || strcmp(buf, want) != 0) {
			bad++;
		}
		for (size_t i = n; i < sizeof(buf); i++)
			if (buf[i] != 'Z') {
				bad++;
				break;
			}
	}
	if (bad)
		fprintf(stderr, "boundary of \"%s\" -> \"%s\": %zu problems\n", in, want, bad);
	CHECK(bad == 0);
}

static void test_encode_boundaries(void)
{
	char out[4];

	check_boundary("", 0, "");
	check_boundary("abc", 0, "abc");
	check_boundary("a b", 0, "a%20b");
	check_boundary("a/b", 1, "a/b");
	check_boundary("a/b", 0, "a%2Fb");
	check_boundary("\xC3\xA9", 0, "%C3%A9");
	check_boundary("x\xC3\xA9y", 0, "x%C3%A9y");

	/* the exact boundary, spelled out */
	CHECK(uri_encode("abc", 0, out, 4) == 3);
	CHECK_STR(out, "abc");
	CHECK(uri_encode("abc", 0, out, 3) == -ENAMETOOLONG);
	CHECK(uri_encode("ab ", 0, out, 4) == -ENAMETOOLONG);
	CHECK(uri_encode("", 0, out, 0) == -ENAMETOOLONG);
	CHECK(uri_encode("", 0, out, 1) == 0);
}

static void test_endpoint_good(void)
{
	struct uri_endpoint ep;

	CHECK(uri_parse_endpoint("http://127.0.0.1:9000", &ep) == 0);
	CHECK(ep.https == 0);
	CHECK_STR(ep.host, "127.0.0.1");
	CHECK(ep.port == 9000);
	CHECK_STR(ep.path, "");

	CHECK(uri_parse_endpoint("https://s3.us-east-1.amazonaws.com", &ep) == 0);
	CHECK(ep.https == 1);
	CHECK_STR(ep.host, "s3.us-east-1.amazonaws.com");
	CHECK(ep.port == 0);
	CHECK_STR(ep.path, "");

	CHECK(uri_parse_endpoint("HTTPS://Storage.Example.COM/", &ep) == 0);
	CHECK(ep.https == 1);
	CHECK_STR(ep.host, "Storage.Example.COM");
	CHECK_STR(ep.path, "");

	/* default ports are dropped, others kept */
	CHECK(uri_parse_endpoint("https://h.example:443", &ep) == 0 && ep.port == 0);
	CHECK(uri_parse_endpoint("http://h.example:80", &ep) == 0 && ep.port == 0);
	CHECK(uri_parse_endpoint("http://h.example:443", &ep) == 0 && ep.port == 443);
	CHECK(uri_parse_endpoint("https://h.example:80", &ep) == 0 && ep.port == 80);
	CHECK(uri_parse_endpoint("http://h:1", &ep) == 0 && ep.port == 1);
	CHECK(uri_parse_endpoint("http://h:65535", &ep) == 0 && ep.port == 65535);

	/* IPv6 literals keep their brackets */
	CHECK(uri_parse_endpoint("http://[::1]:9000", &ep) == 0);
	CHECK_STR(ep.host, "[::1]");
	CHECK(ep.port == 9000);
	CHECK(uri_parse_endpoint("https://[::1]", &ep) == 0);
	CHECK_STR(ep.host, "[::1]");
	CHECK(ep.port == 0);
	CHECK(uri_parse_endpoint("http://[2001:db8::a:1]:8443/base/", &ep) == 0);
	CHECK_STR(ep.host, "[2001:db8::a:1]");
	CHECK(ep.port == 8443);
	CHECK_STR(ep.path, "/base");

	/* base paths: trailing slashes dropped */
	CHECK(uri_parse_endpoint("http://minio.local:9000/s3/", &ep) == 0);
	CHECK_STR(ep.host, "minio.local");
	CHECK(ep.port == 9000);
	CHECK_STR(ep.path, "/s3");
	CHECK(uri_parse_endpoint("http://gw/a/b", &ep) == 0);
	CHECK_STR(ep.path, "/a/b");
	CHECK(uri_parse_endpoint("http://gw/a/b///", &ep) == 0);
	CHECK_STR(ep.path, "/a/b");
	CHECK(uri_parse_endpoint("http://gw//", &ep) == 0);
	CHECK_STR(ep.path, "");
	CHECK(uri_parse_endpoint("http://gw:9000/", &ep) == 0);
	CHECK(ep.port == 9000);
	CHECK_STR(ep.path, "");
	CHECK(uri_parse_endpoint("http://my_host-1.internal", &ep) == 0);
	CHECK_STR(ep.host, "my_host-1.internal");
}

static void test_endpoint_long(void)
{
	struct uri_endpoint ep;
	char url[1024];

	/* a 255-byte host fits, 256 does not */
	memset(url, 0, sizeof(url));
	strcpy(url, "http://");
	memset(url + 7, 'h', 255);
	CHECK(uri_parse_endpoint(url, &ep) == 0);
	CHECK(strlen(ep.host) == 255);
	url[7 + 255] = 'h';
	CHECK(uri_parse_endpoint(url, &ep) == -EINVAL);

	/* a 255-byte base path fits, 256 does not (trailing '/' not counted) */
	memset(url, 0, sizeof(url));
	strcpy(url, "http://h/");
	memset(url + 9, 'p', 254);
	strcat(url, "/");
	CHECK(uri_parse_endpoint(url, &ep) == 0);
	CHECK(strlen(ep.path) == 255);
	url[9 + 254] = 'p';
	CHECK(uri_parse_endpoint(url, &ep) == -EINVAL);
}

static void test_endpoint_bad(void)
{
	static const char *const bad[] = {
		"",
		"localhost:9000",
		"s3.amazonaws.com",
		"//h:9000",
		"ftp://h",
		"s3://bucket",
		"http:/h",
		"http:h",
		"https//h",
		"http://",
		"https://",
		"http:///path",
		"http://:9000",
		"http://h:0",
		"http://h:00",
		"http://h:70000",
		"http://h:65536",
		"http://h:99999999999999999999999",
		"http://h:abc",
		"http://h:9000abc",
		"http://h:9000:1",
		"http://h:",
		"http://h:-1",
		"http://h:/x",
		"http://user@h",
		"http://user:secret@h:9000",
		"http://h/?list-type=2",
		"http://h?x=1",
		"http://h#frag",
		"http://h/path#frag",
		"http://[::1",
		"http://[::1]x",
		"http://[::1]9000",
		"http://ho st",
		"http://h\t",
		"http://h%41",
		"http://h!",
	};
	struct uri_endpoint ep;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = uri_parse_endpoint(bad[i], &ep);
		if (r != -EINVAL)
			fprintf(stderr, "uri_parse_endpoint(\"%s\") = %d, want -EINVAL\n", bad[i],
				r);
		CHECK(r == -EINVAL);
	}
}

static void test_ip_or_local(void)
{
	CHECK(uri_host_is_ip_or_local("127.0.0.1") == 1);
	CHECK(uri_host_is_ip_or_local("10.1.2.3") == 1);
	CHECK(uri_host_is_ip_or_local("0.0.0.0") == 1);
	CHECK(uri_host_is_ip_or_local("[::1]") == 1);
	CHECK(uri_host_is_ip_or_local("[2001:db8::1]") == 1);
	CHECK(uri_host_is_ip_or_local("localhost") == 1);
	CHECK(uri_host_is_ip_or_local("LocalHost") == 1);

	CHECK(uri_host_is_ip_or_local("s3.us-east-1.amazonaws.com") == 0);
	CHECK(uri_host_is_ip_or_local("minio") == 0);
	CHECK(uri_host_is_ip_or_local("localhost.example.com") == 0);
	CHECK(uri_host_is_ip_or_local("mylocalhost") == 0);
	CHECK(uri_host_is_ip_or_local("1.2.3") == 0);
	CHECK(uri_host_is_ip_or_local("256.1.1.1") == 0);
	CHECK(uri_host_is_ip_or_local("1.2.3.4.nip.io") == 0);
	CHECK(uri_host_is_ip_or_local("") == 0);

	/* what the endpoint parser produces feeds straight in */
	{
		struct uri_endpoint ep;
		CHECK(uri_parse_endpoint("http://[::1]:9000", &ep) == 0);
		CHECK(uri_host_is_ip_or_local(ep.host) == 1);
		CHECK(uri_parse_endpoint("https://s3.eu-west-1.amazonaws.com", &ep) == 0);
		CHECK(uri_host_is_ip_or_local(ep.host) == 0);
	}
}

int main(void)
{
	test_encode_basic();
	test_encode_every_byte();
	test_encode_boundaries();
	test_endpoint_good();
	test_endpoint_long();
	test_endpoint_bad();
	test_ip_or_local();
	return check_done();
}
