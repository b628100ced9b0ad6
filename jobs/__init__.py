"""PySpark jobs: ingest (Kafka -> Cassandra, streaming) and visibility (Cassandra -> Redis)."""
