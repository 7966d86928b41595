"""MLflow tracking without Ray: the store helpers, the outbox workers leave records in, and the buffered writer of a
study's runs."""
