/* Metrics and health over HTTP (metrics_port=, metrics_addr=): GET /metrics
 * in Prometheus's text format, /healthz (200 while the FUSE session answers
 * a statfs of the mount, made every second by a heartbeat thread) and
 * /readyz (200 once the prefetch is done: ready_file's condition). Served by
 * libmicrohttpd with one internal thread and a bounded number of
 * connections. Every series carries the mount and source labels.
 *
 * The FUSE operation counters and latency histograms are process-wide (one
 * mount per process): fs/ops.c records each operation with metrics_op().
 */
#ifndef MODELFS_METRICS_H
#define MODELFS_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct fs;
struct metrics;

enum metrics_op {
	MOP_LOOKUP, MOP_GETATTR, MOP_OPEN, MOP_READ, MOP_RELEASE, MOP_OPENDIR, MOP_READDIR,
	MOP_STATFS, MOP_XATTR, MOP_OTHER, MOP_N
};

/* The time now, for metrics_op (CLOCK_MONOTONIC, ns). */
uint64_t metrics_now_ns(void);
/* An operation that began at @t0_ns ended with @err (0 or an errno), having
 * replied @bytes of data (reads). Lock-free; safe from any thread. */
void metrics_op(enum metrics_op op, uint64_t t0_ns, int err, uint64_t bytes);

/* Bind @addr:@port (before daemonizing, so that a port in use fails the
 * mount with a line). @return the listening socket, or -errno with @msg. */
int metrics_listen(const char *addr, int port, char *msg, size_t msg_len);

/* Serve on @fd (metrics_listen's) once the mount is live. @return 0 or
 * -errno with @msg. */
int metrics_start(int fd, struct fs *fs, const char *mountpoint, const char *source,
		  struct metrics **out, char *msg, size_t msg_len);
void metrics_stop(struct metrics *m);

#endif
