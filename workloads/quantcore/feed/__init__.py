"""Feed shards: exchange websockets -> validated local order books -> Kafka."""
