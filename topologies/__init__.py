"""Faust apps that wire the stream_rec core to Kafka."""
