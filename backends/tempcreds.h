/* Temporary credentials that a pod or an instance is given instead of
 * long-lived keys, as key sources for a keyring (keys.h):
 *
 *   TC_AWS_WEB_IDENTITY  IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *                        [AWS_ROLE_SESSION_NAME] -> STS AssumeRoleWithWebIdentity
 *                        at AWS_ENDPOINT_URL_STS, else sts.REGION.amazonaws.com
 *                        (AWS_REGION or AWS_DEFAULT_REGION), else sts.amazonaws.com
 *   TC_AWS_IMDS          the EC2 instance's role, IMDSv2 (a session token first) at
 *                        AWS_EC2_METADATA_SERVICE_ENDPOINT (http://169.254.169.254);
 *                        off with AWS_EC2_METADATA_DISABLED=true
 *   TC_ALI_OIDC          RRSA: ALIBABA_CLOUD_OIDC_TOKEN_FILE + ALIBABA_CLOUD_ROLE_ARN +
 *                        ALIBABA_CLOUD_OIDC_PROVIDER_ARN [ALIBABA_CLOUD_ROLE_SESSION_NAME]
 *                        -> STS AssumeRoleWithOIDC at ALIBABA_CLOUD_STS_ENDPOINT, else
 *                        sts.ALIBABA_CLOUD_STS_REGION.aliyuncs.com, else sts.aliyuncs.com
 *   TC_ALI_ECS           the ECS instance's RAM role (ALIBABA_CLOUD_ECS_METADATA names
 *                        it, else it is asked), with a metadata token, at
 *                        ALIBABA_CLOUD_ECS_METADATA_ENDPOINT (modelfs's; the SDKs fix
 *                        http://100.100.100.200); off with ALIBABA_CLOUD_ECS_METADATA_DISABLED=true
 *
 * The token files are read again at every fetch (kubelet rotates them).
 * Neither a token nor a key is ever logged or put in a URL. A metadata
 * service is asked first with one attempt and a 1 s bound (off an instance
 * there is none: -EHOSTUNREACH, -ECONNREFUSED or -ETIMEDOUT, and the chains
 * go on to anonymous requests); its refreshes get the usual retries.
 */
#ifndef MODELFS_TEMPCREDS_H
#define MODELFS_TEMPCREDS_H

#include <stddef.h>

#include "http.h"
#include "keys.h"

enum tempcreds_kind { TC_AWS_WEB_IDENTITY, TC_AWS_IMDS, TC_ALI_OIDC, TC_ALI_ECS };

/* @return 0 with *@src set up (its own HTTP client; keyring_open takes it),
 * 1 when the environment does not ask for this kind (or, for the metadata
 * services, turns it off), or -errno with one line in @msg (a variable set
 * without its pair, a bad endpoint). */
int tempcreds_source(enum tempcreds_kind kind, const struct http_config *hc,
		     struct key_source *src, char *msg, size_t msg_len);

#endif
