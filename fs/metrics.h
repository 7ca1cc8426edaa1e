/* A mount's figures: the Prometheus text (every series with the mount and
 * source labels), served three ways:
 *   - metrics_port=: GET /metrics, /healthz (200 while the FUSE session
 *     answers a statfs of the mount, made every second by a heartbeat
 *     thread) and /readyz (200 once the prefetch is done: ready_file's
 *     condition), by libmicrohttpd with one thread and bounded connections;
 *   - metrics_dir=: the node_exporter textfile convention, one file per
 *     mount (DIR/modelfs-<id>.prom, replaced atomically every
 *     METRICS_DIR_PERIOD_S, removed at unmount), so that one scrape of the
 *     node covers its hundreds of mounts;
 *   - the user.modelfs.metrics xattr of the mount's root, without labels
 *     (`modelfs stats`), whatever the options.
 *
 * The FUSE operation counters are process-wide (one mount per process):
 * fs/ops.c records each operation with metrics_op(). The backends' figures
 * are in backends/stats.h, the cache's in cache_counters().
 */
#ifndef MODELFS_METRICS_H
#define MODELFS_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct fs;
struct metrics;

#define METRICS_DIR_PERIOD_S 2
/* Distinct models (metrics_per_model) with their own series; the rest
 * share model="/other". */
#define METRICS_MODELS_MAX 1024

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

/* Can the textfile be written in @dir? (before daemonizing, for the same
 * reason) @return 0 or -errno with @msg. */
int metrics_dir_check(const char *dir, char *msg, size_t msg_len);

struct metrics_config {
	int listen_fd;     /* metrics_listen's, or -1 */
	const char *dir;   /* metrics_dir=, or NULL */
	int per_model;     /* metrics_per_model: series by the first path component */
};

/* Start once the mount is live (the heartbeat statfs needs it). Called
 * whatever the options: the xattr needs the labels and counters. @return 0
 * or -errno with @msg. */
int metrics_start(const struct metrics_config *cfg, struct fs *fs, const char *mountpoint,
		  const char *source, struct metrics **out, char *msg, size_t msg_len);
/* After the session ended: stops the threads, removes the textfile. */
void metrics_stop(struct metrics *m);

/* The text without labels (the xattr), in a malloc'd buffer. @return 0 or
 * -ENOMEM. */
int metrics_text(struct metrics *m, char **out, size_t *len);

/* The model of a file at @relpath (its first path component; files at the
 * root are "/root"), as an index for metrics_model_*; 0 when the mount
 * keeps no per-model series. Takes a lock: call at open, not per read. */
unsigned metrics_model(struct metrics *m, const char *relpath);
void metrics_model_open(struct metrics *m, unsigned model, int passthrough);
void metrics_model_read(struct metrics *m, unsigned model, uint64_t bytes);

#endif
