/* A unary gRPC server on a unix socket, over gRPC's C core (Debian's
 * libgrpc): the only file of the plugin that knows gRPC. Requests and
 * answers are protobuf bytes; what they mean is service.c's.
 *
 * Threads: one thread (rpc_server_run's caller) waits on the completion
 * queue; each request is handled in a thread of its own, so a slow
 * NodeStageVolume (a mount that probes its store) does not hold up Probe.
 */
#ifndef MODELFS_CSI_RPC_H
#define MODELFS_CSI_RPC_H

#include <stddef.h>
#include <stdint.h>

/* What a handler answers: a gRPC status code (0: OK, then *out is sent),
 * with @msg the status message otherwise. *out is malloc'd (or NULL for an
 * empty message). */
typedef int (*rpc_handler)(void *arg, const uint8_t *in, size_t in_len, uint8_t **out,
			   size_t *out_len, char *msg, size_t msg_len);

struct rpc_method {
	const char *path; /* "/csi.v1.Node/NodeStageVolume" */
	rpc_handler fn;
};

struct rpc_server;

/* Listen on @endpoint ("unix:///csi/csi.sock" or "unix:/path"; a stale
 * socket file there is removed). @methods ends with a NULL path. */
int rpc_server_start(const char *endpoint, const struct rpc_method *methods, void *arg,
		     struct rpc_server **out, char *msg, size_t msg_len);
/* Serve until *@stop is set (checked every 200 ms); then stop taking
 * requests, let those in flight end and free everything. */
void rpc_server_run(struct rpc_server *srv, volatile int *stop);

#endif
