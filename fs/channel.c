/* The channel's hooks (channel.h).
 *
 * Reading. The fd is non-blocking and every reader waits on it together
 * with an eventfd that chan_stop makes readable (a reader blocked in
 * read(2) could not be called back without taking a request), each in its
 * own epoll set with EPOLLEXCLUSIVE on the fd: a request wakes one reader,
 * not all of them. A reader counts
 * itself in `reading` before it looks at `stopping` (and chan_stop sets
 * `stopping` before it looks at `reading`), so once chan_stop sees no
 * reader, no request is taken after it. What is read and expects an answer
 * is noted in the kept state, by its unique id, until its reply is written.
 *
 * Replay. libfuse answers every request before INIT with EIO, and the
 * kernel sends INIT once per connection. On an adopted connection the
 * first reader returns the INIT kept from the first daemon; the other
 * readers wait until its reply (swallowed here: the kernel has its own)
 * is done, and the requests left in flight are dealt with.
 *
 * The protocol's numbers are the kernel's stable ABI
 * (include/uapi/linux/fuse.h); Debian 12's headers predate some.
 */
#include "channel.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define OP_FORGET        2
#define OP_INIT          26
#define OP_INTERRUPT     36
#define OP_NOTIFY_REPLY  41
#define OP_BATCH_FORGET  42
#define IN_HEADER        40
#define OUT_HEADER       16
#define INIT_EXT         (1u << 30)
#define FLAGS2_HAS_RESEND (1u << 7) /* FUSE_HAS_RESEND is bit 39 */
#define NOTIFY_RESEND    7

enum { REPLAY_NONE, REPLAY_PENDING, REPLAY_RUNNING };

struct chan {
	struct fuse_session *se;
	struct keep *keep;
	struct pt *pt;
	int fd, wake;
	atomic_int stopping;
	atomic_int reading;    /* readers between their check of stopping and their read */
	atomic_int replay;     /* REPLAY_*; the other readers wait while RUNNING */
	uint64_t replay_unique; /* the replayed INIT's id */
	int resends;           /* the INIT says the kernel has FUSE_NOTIFY_RESEND */
	int fail_left;         /* adopted after crashes in a row: fail what was in flight */
	pthread_mutex_t lock;  /* the replay's start */
};

/* Each reader's epoll set: the fd (exclusive) and the eventfd; closed
 * when its thread ends (libfuse ends idle workers beyond 16). */
static _Thread_local int my_epoll = -1;
static pthread_key_t epoll_key;
static pthread_once_t epoll_once = PTHREAD_ONCE_INIT;
static void epoll_close(void *p) { close((int)(intptr_t)p - 1); }
static void epoll_key_init(void) { pthread_key_create(&epoll_key, epoll_close); }

static struct chan *the_chan; /* the hooks get libfuse's userdata, not ours */

static uint32_t get32(const void *p, size_t off)
{
	uint32_t v;
	memcpy(&v, (const char *)p + off, 4);
	return v;
}

static uint64_t get64(const void *p, size_t off)
{
	uint64_t v;
	memcpy(&v, (const char *)p + off, 8);
	return v;
}

static int answered(uint32_t op)
{
	return op != OP_FORGET && op != OP_BATCH_FORGET && op != OP_INTERRUPT &&
	       op != OP_NOTIFY_REPLY;
}

static void note_init(struct chan *c, const void *buf, size_t len)
{
	/* fuse_init_in after the header: major, minor, max_readahead, flags, flags2 */
	c->resends = len >= IN_HEADER + 20 && (get32(buf, IN_HEADER + 12) & INIT_EXT) &&
		     (get32(buf, IN_HEADER + 16) & FLAGS2_HAS_RESEND);
}

/* Until the process ends. No lock held: libfuse cancels its workers at the
 * end of its loop, and pause() is a cancellation point. */
static void park(void)
{
	for (;;)
		pause();
}

static int reader_epoll(struct chan *c, int fd)
{
	struct epoll_event a = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = fd};
	struct epoll_event b = {.events = EPOLLIN, .data.fd = c->wake};
	int ep;

	if (my_epoll >= 0)
		return my_epoll;
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return -1;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &a) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->wake, &b) != 0) {
		close(ep);
		return -1;
	}
	pthread_once(&epoll_once, epoll_key_init);
	pthread_setspecific(epoll_key, (void *)(intptr_t)(ep + 1));
	return my_epoll = ep;
}

static ssize_t hook_read(int fd, void *buf, size_t len, void *userdata)
{
	struct chan *c = the_chan;

	(void)userdata;
	for (;;) {
		struct epoll_event ev;
		ssize_t r;
		int e, ep;

		if (atomic_load(&c->stopping))
			park();
		if (atomic_load(&c->replay) != REPLAY_NONE) {
			int first = 0;
			pthread_mutex_lock(&c->lock);
			if (atomic_load(&c->replay) == REPLAY_PENDING) {
				atomic_store(&c->replay, REPLAY_RUNNING);
				first = 1;
			}
			pthread_mutex_unlock(&c->lock);
			/* the others wait for its reply (a millisecond or so) */
			while (!first && atomic_load(&c->replay) == REPLAY_RUNNING)
				usleep(1000);
			if (first) {
				r = (ssize_t)keep_get_init(c->keep, buf, len);
				c->replay_unique = get64(buf, 8);
				pt_saw_request(c->pt, buf, (size_t)r);
				return r;
			}
			continue;
		}
		atomic_fetch_add(&c->reading, 1);
		if (atomic_load(&c->stopping)) {
			atomic_fetch_sub(&c->reading, 1);
			continue;
		}
		r = read(fd, buf, len);
		e = errno;
		if (r >= IN_HEADER) {
			uint32_t op = get32(buf, 4);
			if (op == OP_INIT) {
				keep_set_init(c->keep, buf, (size_t)r);
				note_init(c, buf, (size_t)r);
			}
			if (answered(op))
				keep_inflight_add(c->keep, get64(buf, 8));
			pt_saw_request(c->pt, buf, (size_t)r);
		}
		atomic_fetch_sub(&c->reading, 1);
		if (r >= 0 || e != EAGAIN) {
			errno = e;
			return r;
		}
		if ((ep = reader_epoll(c, fd)) >= 0) {
			if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR)
				return -1;
		} else {
			struct pollfd p[2] = {{fd, POLLIN, 0}, {c->wake, POLLIN, 0}};
			if (poll(p, 2, -1) < 0 && errno != EINTR)
				return -1;
		}
	}
}

static int write_all(int fd, const void *buf, size_t len)
{
	return write(fd, buf, len) == (ssize_t)len ? 0 : -errno;
}

/* Answer @n requests EIO (ENOENT for one: it was answered after all). */
static void fail_ids(struct chan *c, const uint64_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char m[OUT_HEADER];
		uint32_t l = OUT_HEADER;
		int32_t err = -EIO;
		memcpy(m, &l, 4);
		memcpy(m + 4, &err, 4);
		memcpy(m + 8, &ids[i], 8);
		(void)write_all(c->fd, m, sizeof(m));
	}
}

/* The adopted connection's INIT is answered (here): what the last daemon
 * left unanswered is sent again, or failed. The table is cleared after:
 * a crash meanwhile leaves it for the next daemon. */
static void after_replay(struct chan *c)
{
	uint64_t left[512];
	size_t n = keep_inflight_list(c->keep, left, 512);
	const char *fault = getenv("MODELFS_FAULT");
	int resend = c->resends && !c->fail_left && !(fault && strcmp(fault, "no_resend") == 0);

	if (resend) {
		/* fuse_out_header: len, error (the notification's code), unique 0 */
		unsigned char m[OUT_HEADER] = {0};
		uint32_t l = OUT_HEADER;
		int32_t code = NOTIFY_RESEND;
		memcpy(m, &l, 4);
		memcpy(m + 4, &code, 4);
		if (write_all(c->fd, m, sizeof(m)) == 0) {
			if (n)
				log_info("%zu requests left in flight sent again (FUSE_NOTIFY_RESEND)", n);
			keep_inflight_clear(c->keep);
			return;
		}
		log_warn("the kernel refused to send the requests in flight again (%s)",
			 strerror(errno));
	}
	fail_ids(c, left, n);
	keep_inflight_clear(c->keep);
	if (n)
		log_warn("%zu requests left in flight answered EIO (%s)", n,
			 c->fail_left ? "the daemons before this one crashed in a row: one of them may "
					"be what crashes them"
				      : "the kernel cannot send them again: Linux >= 6.9 can");
}

static ssize_t hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct chan *c = the_chan;
	uint64_t unique = 0;
	ssize_t r;

	(void)userdata;
	if (count >= 1 && iov[0].iov_len >= OUT_HEADER)
		unique = get64(iov[0].iov_base, 8);
	pt_amend_reply(c->pt, iov, count);
	if (unique && atomic_load(&c->replay) == REPLAY_RUNNING && unique == c->replay_unique) {
		size_t n = 0;
		for (int i = 0; i < count; i++)
			n += iov[i].iov_len;
		after_replay(c);
		atomic_store(&c->replay, REPLAY_NONE);
		return (ssize_t)n;
	}
	r = writev(fd, iov, count);
	if (unique)
		keep_inflight_del(c->keep, unique);
	return r;
}

int chan_setup(struct fuse_session *se, struct keep *keep, struct pt *pt, int adopted,
	       struct chan **out)
{
	static const struct fuse_custom_io io = {.read = hook_read, .writev = hook_writev};
	struct chan *c = calloc(1, sizeof(*c));
	unsigned char init[256];
	size_t n;
	int fl;

	if (!c)
		return -ENOMEM;
	c->se = se;
	c->keep = keep;
	c->pt = pt;
	c->fd = fuse_session_fd(se);
	pthread_mutex_init(&c->lock, NULL);
	c->fail_left = adopted == CHAN_ADOPT_FAIL;
	if ((c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
	    (fl = fcntl(c->fd, F_GETFL)) < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int err = -errno;
		chan_free(c);
		return err;
	}
	if (adopted) {
		if ((n = keep_get_init(keep, init, sizeof(init))) < IN_HEADER + 20 ||
		    get32(init, 4) != OP_INIT) {
			chan_free(c);
			return -EPROTO; /* the last daemon never got its INIT */
		}
		note_init(c, init, n);
		atomic_store(&c->replay, REPLAY_PENDING);
	}
	the_chan = c;
	if (fuse_session_custom_io(se, &io, c->fd) != 0) {
		the_chan = NULL;
		chan_free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void chan_free(struct chan *c)
{
	if (!c)
		return;
	if (c->wake >= 0)
		close(c->wake);
	/* parked readers may still wait on them: the process is ending */
	free(c);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

unsigned chan_stop(struct chan *c, unsigned timeout_ms)
{
	uint64_t until = mono_ms() + timeout_ms, one = 1;

	atomic_store(&c->stopping, 1);
	if (write(c->wake, &one, sizeof(one)) < 0) {
		/* the counter is full: readable anyway */
	}
	while ((atomic_load(&c->reading) || keep_inflight_count(c->keep)) && mono_ms() < until)
		usleep(1000);
	return keep_inflight_count(c->keep);
}

void chan_fail_inflight(struct chan *c)
{
	uint64_t left[512];

	fail_ids(c, left, keep_inflight_list(c->keep, left, 512));
	keep_inflight_clear(c->keep);
}

int chan_kernel_resends(struct chan *c)
{
	return c->resends;
}
