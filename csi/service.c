/* The CSI Identity and Node services: protobuf in, node.c's work, protobuf
 * out. The only file of the plugin that knows the messages (csi.proto,
 * compiled by protoc-c at build time). */
#include "service.h"

#include "csi.pb-c.h"
#include "node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PLUGIN_NAME "csi.modelfs.io"

/* The answer's bytes, or RESOURCE_EXHAUSTED. */
static int pack(const ProtobufCMessage *m, uint8_t **out, size_t *out_len)
{
	size_t len = protobuf_c_message_get_packed_size(m);

	*out = malloc(len ? len : 1);
	if (!*out)
		return CSI_RESOURCE_EXHAUSTED;
	*out_len = protobuf_c_message_pack(m, *out);
	return CSI_OK;
}

/* A request that does not parse. */
static int bad_message(char *msg, size_t msg_len)
{
	snprintf(msg, msg_len, "the request is not a valid message");
	return CSI_INVALID_ARGUMENT;
}

/* A map field as key/value pairs: the entry types differ, their fields not. */
#define KV_FILL(dst, n, entries)                                                      \
	do {                                                                          \
		for (size_t i_ = 0; i_ < (n); i_++)                                   \
			(dst)[i_] = (struct kv){(entries)[i_]->key, (entries)[i_]->value}; \
	} while (0)

static void log_call(const char *method, const char *volume_id, int code, const char *msg,
		     struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (long)((t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000);
	const char *vol = volume_id && *volume_id ? volume_id : "-";

	if (code)
		fprintf(stderr, "modelfs-csi: %s %s: code %d: %s (%ld ms)\n", method, vol, code, msg,
			ms);
	else
		fprintf(stderr, "modelfs-csi: %s %s: OK (%ld ms)\n", method, vol, ms);
}

static int get_plugin_info(void *arg, const uint8_t *in, size_t in_len, uint8_t **out,
			   size_t *out_len, char *msg, size_t msg_len)
{
	Csi__V1__GetPluginInfoResponse r = CSI__V1__GET_PLUGIN_INFO_RESPONSE__INIT;

	r.name = (char *)PLUGIN_NAME;
	r.vendor_version = (char *)MODELFS_VERSION;
	return pack(&r.base, out, out_len);
}

static int get_plugin_capabilities(void *arg, const uint8_t *in, size_t in_len, uint8_t **out,
				   size_t *out_len, char *msg, size_t msg_len)
{
	/* a node plugin only: no controller service, no topology */
	Csi__V1__GetPluginCapabilitiesResponse r = CSI__V1__GET_PLUGIN_CAPABILITIES_RESPONSE__INIT;

	return pack(&r.base, out, out_len);
}

static int probe(void *arg, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
		 char *msg, size_t msg_len)
{
	Csi__V1__ProbeResponse r = CSI__V1__PROBE_RESPONSE__INIT;
	Csi__V1__BoolValue ready = CSI__V1__BOOL_VALUE__INIT;

	ready.value = 1;
	r.ready = &ready;
	return pack(&r.base, out, out_len);
}

static int get_capabilities(void *arg, const uint8_t *in, size_t in_len, uint8_t **out,
			    size_t *out_len, char *msg, size_t msg_len)
{
	Csi__V1__NodeGetCapabilitiesResponse r = CSI__V1__NODE_GET_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__NodeServiceCapability caps[3], *pcaps[3];
	Csi__V1__NodeServiceCapability__RPC rpcs[3];
	static const Csi__V1__NodeServiceCapability__RPC__Type types[3] = {
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__STAGE_UNSTAGE_VOLUME,
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME_STATS,
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
	};

	for (int i = 0; i < 3; i++) {
		csi__v1__node_service_capability__init(&caps[i]);
		csi__v1__node_service_capability__rpc__init(&rpcs[i]);
		rpcs[i].type = types[i];
		caps[i].type_case = CSI__V1__NODE_SERVICE_CAPABILITY__TYPE_RPC;
		caps[i].rpc = &rpcs[i];
		pcaps[i] = &caps[i];
	}
	r.n_capabilities = 3;
	r.capabilities = pcaps;
	return pack(&r.base, out, out_len);
}

static int get_info(void *arg, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
		    char *msg, size_t msg_len)
{
	Csi__V1__NodeGetInfoResponse r = CSI__V1__NODE_GET_INFO_RESPONSE__INIT;

	r.node_id = (char *)node_id(arg);
	return pack(&r.base, out, out_len);
}

static void capability(const Csi__V1__VolumeCapability *c, struct node_req *r)
{
	if (!c)
		return;
	r->has_capability = 1;
	r->block = c->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
	r->access_mode = c->access_mode ? (int)c->access_mode->mode : 0;
	if (c->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT && c->mount) {
		r->mount_flags = (const char *const *)c->mount->mount_flags;
		r->n_mount_flags = c->mount->n_mount_flags;
	}
}

static int stage(void *arg, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
		 char *msg, size_t msg_len)
{
	Csi__V1__NodeStageVolumeRequest *q = csi__v1__node_stage_volume_request__unpack(NULL, in_len, in);
	Csi__V1__NodeStageVolumeResponse r = CSI__V1__NODE_STAGE_VOLUME_RESPONSE__INIT;
	struct node_req req = {0};
	struct kv *ctx = NULL, *sec = NULL;
	struct timespec t0;
	int code;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!q)
		return bad_message(msg, msg_len);
	ctx = calloc(q->n_volume_context + 1, sizeof(*ctx));
	sec = calloc(q->n_secrets + 1, sizeof(*sec));
	if (!ctx || !sec) {
		code = CSI_RESOURCE_EXHAUSTED;
		goto out;
	}
	KV_FILL(ctx, q->n_volume_context, q->volume_context);
	KV_FILL(sec, q->n_secrets, q->secrets);
	req.volume_id = q->volume_id;
	req.staging = q->staging_target_path;
	capability(q->volume_capability, &req);
	req.context = ctx;
	req.n_context = q->n_volume_context;
	req.secrets = sec;
	req.n_secrets = q->n_secrets;
	code = node_stage(arg, &req, msg, msg_len);
	if (code == CSI_OK)
		code = pack(&r.base, out, out_len);
out:
	log_call("NodeStageVolume", q->volume_id, code, msg, &t0);
	free(ctx);
	free(sec);
	/* the secrets' text goes with the message */
	for (size_t i = 0; i < q->n_secrets; i++)
		if (q->secrets[i]->value)
			memset(q->secrets[i]->value, 0, strlen(q->secrets[i]->value));
	csi__v1__node_stage_volume_request__free_unpacked(q, NULL);
	return code;
}

static int unstage(void *arg, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
		   char *msg, size_t msg_len)
{
	Csi__V1__NodeUnstageVolumeRequest *q = csi__v1__node_unstage_volume_request__unpack(NULL, in_len, in);
	Csi__V1__NodeUnstageVolumeResponse r = CSI__V1__NODE_UNSTAGE_VOLUME_RESPONSE__INIT;
	struct timespec t0;
	int code;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!q)
		return bad_message(msg, msg_len);
	code = node_unstage(arg, q->volume_id, q->staging_target_path, msg, msg_len);
	if (code == CSI_OK)
		code = pack(&r.base, out, out_len);
	log_call("NodeUnstageVolume", q->volume_id, code, msg, &t0);
	csi__v1__node_unstage_volume_request__free_unpacked(q, NULL);
	return code;
}

static int publish(void *arg, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
		   char *msg, size_t msg_len)
{
	Csi__V1__NodePublishVolumeRequest *q = csi__v1__node_publish_volume_request__unpack(NULL, in_len, in);
	Csi__V1__NodePublishVolumeResponse r = CSI__V1__NODE_PUBLISH_VOLUME_RESPONSE__INIT;
	struct node_req req = {0};
	struct kv *ctx;
	struct timespec t0;
	int code;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!q)
		return bad_message(msg, msg_len);
	if (!(ctx = calloc(q->n_volume_context + 1, sizeof(*ctx)))) {
		code = CSI_RESOURCE_EXHAUSTED;
		goto out;
	}
	KV_FILL(ctx, q->n_volume_context, q->volume_context);
	req.volume_id = q->volume_id;
	req.staging = q->staging_target_path;
	req.target = q->target_path;
	req.readonly = q->readonly;
	capability(q->volume_capability, &req);
	req.context = ctx;
	req.n_context = q->n_volume_context;
	code = node_publish(arg, &req, msg, msg_len);
	if (code == CSI_OK)
		code = pack(&r.base, out, out_len);
	free(ctx);
out:
	log_call("NodePublishVolume", q->volume_id, code, msg, &t0);
	for (size_t i = 0; i < q->n_secrets; i++)
		if (q->secrets[i]->value)
			memset(q->secrets[i]->value, 0, strlen(q->secrets[i]->value));
	csi__v1__node_publish_volume_request__free_unpacked(q, NULL);
	return code;
}

static int unpublish(void *arg, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
		     char *msg, size_t msg_len)
{
	Csi__V1__NodeUnpublishVolumeRequest *q = csi__v1__node_unpublish_volume_request__unpack(NULL, in_len, in);
	Csi__V1__NodeUnpublishVolumeResponse r = CSI__V1__NODE_UNPUBLISH_VOLUME_RESPONSE__INIT;
	struct timespec t0;
	int code;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!q)
		return bad_message(msg, msg_len);
	code = node_unpublish(arg, q->volume_id, q->target_path, msg, msg_len);
	if (code == CSI_OK)
		code = pack(&r.base, out, out_len);
	log_call("NodeUnpublishVolume", q->volume_id, code, msg, &t0);
	csi__v1__node_unpublish_volume_request__free_unpacked(q, NULL);
	return code;
}

static int volume_stats(void *arg, const uint8_t *in, size_t in_len, uint8_t **out,
			size_t *out_len, char *msg, size_t msg_len)
{
	Csi__V1__NodeGetVolumeStatsRequest *q = csi__v1__node_get_volume_stats_request__unpack(NULL, in_len, in);
	Csi__V1__NodeGetVolumeStatsResponse r = CSI__V1__NODE_GET_VOLUME_STATS_RESPONSE__INIT;
	Csi__V1__VolumeUsage u[2], *pu[2];
	Csi__V1__VolumeCondition cond = CSI__V1__VOLUME_CONDITION__INIT;
	struct node_usage nu;
	int code;

	if (!q)
		return bad_message(msg, msg_len);
	code = node_stats(arg, q->volume_id, q->volume_path, &nu, msg, msg_len);
	if (code == CSI_OK) {
		csi__v1__volume_usage__init(&u[0]);
		csi__v1__volume_usage__init(&u[1]);
		u[0].unit = CSI__V1__VOLUME_USAGE__UNIT__BYTES;
		u[0].total = nu.bytes_total;
		u[0].used = nu.bytes_used;
		u[0].available = nu.bytes_available;
		u[1].unit = CSI__V1__VOLUME_USAGE__UNIT__INODES;
		u[1].total = nu.inodes_total;
		u[1].used = nu.inodes_used;
		u[1].available = nu.inodes_available;
		pu[0] = &u[0];
		pu[1] = &u[1];
		r.n_usage = 2;
		r.usage = pu;
		cond.abnormal = nu.abnormal;
		cond.message = nu.condition;
		r.volume_condition = &cond;
		code = pack(&r.base, out, out_len);
	}
	csi__v1__node_get_volume_stats_request__free_unpacked(q, NULL);
	return code;
}

const struct rpc_method csi_methods[] = {
    {"/csi.v1.Identity/GetPluginInfo", get_plugin_info},
    {"/csi.v1.Identity/GetPluginCapabilities", get_plugin_capabilities},
    {"/csi.v1.Identity/Probe", probe},
    {"/csi.v1.Node/NodeGetCapabilities", get_capabilities},
    {"/csi.v1.Node/NodeGetInfo", get_info},
    {"/csi.v1.Node/NodeStageVolume", stage},
    {"/csi.v1.Node/NodeUnstageVolume", unstage},
    {"/csi.v1.Node/NodePublishVolume", publish},
    {"/csi.v1.Node/NodeUnpublishVolume", unpublish},
    {"/csi.v1.Node/NodeGetVolumeStats", volume_stats},
    {NULL, NULL},
};
