#!/usr/bin/env python3
"""What kubelet does to a CSI node plugin, one call at a time, with a real
gRPC client (Debian's python3-grpcio) and the project's csi/csi.proto
compiled at test time (protoc --python_out).

  csi_client.py GEN_DIR SOCKET METHOD [JSON_REQUEST]

METHOD is Service/Method ("Node/NodeStageVolume"). Prints "OK " and the
answer as JSON (exit 0), or "ERROR CODE_NAME: details" (exit 1).
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
import csi_pb2  # noqa: E402


def main():
    sock, method = sys.argv[2], sys.argv[3]
    body = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    name = method.split("/")[1]
    req_t = getattr(csi_pb2, name + "Request")
    resp_t = getattr(csi_pb2, name + "Response")
    req = json_format.ParseDict(body, req_t())
    with grpc.insecure_channel("unix://" + sock) as ch:
        call = ch.unary_unary("/csi.v1." + method,
                              request_serializer=req_t.SerializeToString,
                              response_deserializer=resp_t.FromString)
        try:
            resp = call(req, timeout=150)
        except grpc.RpcError as e:
            print("ERROR %s: %s" % (e.code().name, e.details()))
            return 1
    print("OK " + json.dumps(json_format.MessageToDict(resp), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
