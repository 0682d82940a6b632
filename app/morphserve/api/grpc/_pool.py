"""The descriptor pool of morphserve's gRPC messages, apart from protobuf's default pool (scripts/gen_grpc.py says
why: Triton's and KServe's client modules register the same message names there)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
