"""convserve serving side: repository, runtime, batching, preprocessing, gRPC, metrics."""
