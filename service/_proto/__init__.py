"""Generated protobuf and gRPC stubs (from protos/ by scripts/gen_protos.py; never edited)."""
