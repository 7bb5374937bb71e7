"""The push gateway (``stream-rec gateway``): the frontend's door to the recommendations topic.

A browser cannot read Kafka; the gateway reads the recommendations topic for it and pushes each
user's latest recommendations to that user's subscribers (Server-Sent Events, WebSocket), takes
events by ``POST /events`` into the events topic under the workers' contract, and serves the
demo shop. :mod:`.app` the endpoints, :mod:`.tokens` who may read what, :mod:`.latest` the
latest-per-user map, :mod:`.kafka_io` the Kafka clients, :mod:`.server` uvicorn. The core never
imports it.
"""
