/* The gRPC server (rpc.h). A request goes through three batches on the one
 * completion queue, each tagged with its struct call:
 *   REQUESTED  grpc_server_request_call completed: a new call; another
 *              request is posted at once, and RECV_MESSAGE started
 *   RECEIVED   the request's bytes are here: a thread runs the handler and
 *              starts the answer's batch (initial metadata, message,
 *              status, close) from that thread (start_batch is thread-safe)
 *   ANSWERED   the answer is out (or the client went): the call is freed
 * The main thread only moves calls along; it never blocks on a handler.
 */
#include "rpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

enum stage { REQUESTED, RECEIVED, ANSWERED, SHUTDOWN };

struct rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq;
	const struct rpc_method *methods;
	void *arg;
	pthread_mutex_t lock; /* guards running */
	pthread_cond_t idle;
	unsigned running;     /* handler threads not yet done */
};

struct call {
	enum stage stage;
	struct rpc_server *srv;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_byte_buffer *req;
	grpc_byte_buffer *resp;
	int cancelled;
};

static struct call shutdown_tag = {.stage = SHUTDOWN};

static void call_free(struct call *c)
{
	if (c->req)
		grpc_byte_buffer_destroy(c->req);
	if (c->resp)
		grpc_byte_buffer_destroy(c->resp);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	if (c->call)
		grpc_call_unref(c->call);
	free(c);
}

/* Post a request for the next call. */
static int request_next(struct rpc_server *srv)
{
	struct call *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->srv = srv;
	c->stage = REQUESTED;
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	if (grpc_server_request_call(srv->server, &c->call, &c->details, &c->md, srv->cq,
				     srv->cq, c) != GRPC_CALL_OK) {
		call_free(c);
		return -EIO;
	}
	return 0;
}

/* Start the answer: @code, and @body (protobuf bytes) when it is OK. */
static void answer(struct call *c, int code, const uint8_t *body, size_t len, const char *msg)
{
	grpc_op ops[4];
	grpc_slice details = grpc_slice_from_copied_string(code ? msg : "");
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
	n++;
	if (code == 0) {
		grpc_slice s = grpc_slice_from_copied_buffer((const char *)body, len);
		c->resp = grpc_raw_byte_buffer_create(&s, 1);
		grpc_slice_unref(s);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = c->resp;
		n++;
	}
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)code;
	ops[n].data.send_status_from_server.status_details = &details;
	n++;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
	n++;
	c->stage = ANSWERED;
	if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
		/* no completion will come for it */
		fprintf(stderr, "modelfs-csi: cannot answer a call\n");
		call_free(c);
	}
	grpc_slice_unref(details);
}

static void *handle(void *arg)
{
	struct call *c = arg;
	struct rpc_server *srv = c->srv;
	const struct rpc_method *m;
	char msg[1024] = "";
	uint8_t *out = NULL;
	size_t out_len = 0;
	int code = GRPC_STATUS_UNIMPLEMENTED;
	grpc_slice path = c->details.method;
	size_t plen = GRPC_SLICE_LENGTH(path);

	snprintf(msg, sizeof(msg), "method %.*s is not served here", (int)plen,
		 (const char *)GRPC_SLICE_START_PTR(path));
	for (m = srv->methods; m->path; m++) {
		grpc_byte_buffer_reader r;
		grpc_slice body;

		if (strlen(m->path) != plen || memcmp(m->path, GRPC_SLICE_START_PTR(path), plen) != 0)
			continue;
		if (!c->req || !grpc_byte_buffer_reader_init(&r, c->req)) {
			code = GRPC_STATUS_INVALID_ARGUMENT;
			snprintf(msg, sizeof(msg), "no request message");
			break;
		}
		body = grpc_byte_buffer_reader_readall(&r);
		grpc_byte_buffer_reader_destroy(&r);
		msg[0] = '\0';
		code = m->fn(srv->arg, GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body), &out,
			     &out_len, msg, sizeof(msg));
		grpc_slice_unref(body);
		break;
	}
	answer(c, code, out, out_len, msg);
	free(out);
	pthread_mutex_lock(&srv->lock);
	if (--srv->running == 0)
		pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void received(struct call *c)
{
	struct rpc_server *srv = c->srv;
	pthread_attr_t at;
	pthread_t t;

	pthread_mutex_lock(&srv->lock);
	srv->running++;
	pthread_mutex_unlock(&srv->lock);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, handle, c) != 0) {
		pthread_mutex_lock(&srv->lock);
		srv->running--;
		pthread_mutex_unlock(&srv->lock);
		answer(c, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL, 0, "cannot start a thread");
	}
	pthread_attr_destroy(&at);
}

static void on_event(struct rpc_server *srv, struct call *c, int success)
{
	grpc_op op;

	switch (c->stage) {
	case REQUESTED:
		if (!success) { /* the server is shutting down */
			call_free(c);
			return;
		}
		if (request_next(srv) != 0)
			fprintf(stderr, "modelfs-csi: cannot take more calls\n");
		memset(&op, 0, sizeof(op));
		op.op = GRPC_OP_RECV_MESSAGE;
		op.data.recv_message.recv_message = &c->req;
		c->stage = RECEIVED;
		if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK)
			call_free(c);
		return;
	case RECEIVED:
		if (!success) {
			call_free(c);
			return;
		}
		received(c);
		return;
	case ANSWERED:
		call_free(c);
		return;
	case SHUTDOWN:
		return;
	}
}

static const char *socket_path(const char *endpoint)
{
	if (strncmp(endpoint, "unix://", 7) == 0)
		return endpoint + 7;
	if (strncmp(endpoint, "unix:", 5) == 0)
		return endpoint + 5;
	return NULL;
}

int rpc_server_start(const char *endpoint, const struct rpc_method *methods, void *arg,
		     struct rpc_server **out, char *msg, size_t msg_len)
{
	const char *path = socket_path(endpoint);
	struct rpc_server *srv = NULL;
	grpc_server_credentials *cr;
	char addr[4200];
	struct stat st;

	if (!path || path[0] != '/') {
		snprintf(msg, msg_len, "--endpoint %s: expected unix:///ABSOLUTE/PATH", endpoint);
		return -EINVAL;
	}
	/* a socket left by a plugin that was killed: nobody can listen there */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(msg, msg_len, "--endpoint %s: the path exists and is not a socket",
				 endpoint);
			return -EEXIST;
		}
		unlink(path);
	}
	snprintf(addr, sizeof(addr), "unix:%s", path);
	grpc_init();
	if (!(srv = calloc(1, sizeof(*srv))))
		goto nomem;
	srv->methods = methods;
	srv->arg = arg;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->idle, NULL);
	srv->server = grpc_server_create(NULL, NULL);
	srv->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
	cr = grpc_insecure_server_credentials_create();
	if (!grpc_server_add_http2_port(srv->server, addr, cr)) {
		grpc_server_credentials_release(cr);
		snprintf(msg, msg_len, "cannot listen on %s", endpoint);
		grpc_server_destroy(srv->server);
		grpc_completion_queue_shutdown(srv->cq);
		grpc_completion_queue_destroy(srv->cq);
		free(srv);
		grpc_shutdown();
		return -EADDRINUSE;
	}
	grpc_server_credentials_release(cr);
	chmod(path, 0660); /* kubelet runs as root; nobody else talks to it */
	grpc_server_start(srv->server);
	if (request_next(srv) != 0)
		goto nomem;
	*out = srv;
	return 0;
nomem:
	snprintf(msg, msg_len, "cannot start the gRPC server");
	return -ENOMEM;
}

static gpr_timespec in_ms(unsigned ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
			    gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

void rpc_server_run(struct rpc_server *srv, volatile int *stop)
{
	grpc_event ev;

	while (!*stop) {
		ev = grpc_completion_queue_next(srv->cq, in_ms(200), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			on_event(srv, ev.tag, ev.success);
	}
	/* no new calls; those being handled answer, then everything ends */
	grpc_server_shutdown_and_notify(srv->server, srv->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(srv->server); /* a client that never sends */
	for (int shut = 0, idle = 0; !(shut && idle);) {
		ev = grpc_completion_queue_next(srv->cq, in_ms(200), NULL);
		if (ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag)
			shut = 1;
		else if (ev.type == GRPC_OP_COMPLETE)
			on_event(srv, ev.tag, ev.success);
		pthread_mutex_lock(&srv->lock);
		idle = srv->running == 0;
		pthread_mutex_unlock(&srv->lock);
	}
	grpc_server_destroy(srv->server);
	grpc_completion_queue_shutdown(srv->cq);
	/* the last answers' completions */
	while ((ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
						NULL))
		       .type != GRPC_QUEUE_SHUTDOWN)
		if (ev.type == GRPC_OP_COMPLETE && ev.tag != &shutdown_tag)
			on_event(srv, ev.tag, ev.success);
	grpc_completion_queue_destroy(srv->cq);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->idle);
	free(srv);
	grpc_shutdown();
}
