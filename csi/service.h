/* The CSI services' methods, for rpc.h's server; their @arg is a struct
 * node (node.h). */
#ifndef MODELFS_CSI_SERVICE_H
#define MODELFS_CSI_SERVICE_H

#include "rpc.h"

extern const struct rpc_method csi_methods[];

#endif
