"""The serving Lambda: API Gateway REST proxy events to churnops.serving."""
