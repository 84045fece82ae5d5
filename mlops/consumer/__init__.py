"""The stream: micro-batching Kafka consumer, DLQ, idempotent result writes, hot model reload, metrics."""
