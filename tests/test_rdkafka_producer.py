"""The librdkafka producer of the detector's events: settings, failures, placement by key."""

from __future__ import annotations

import time

import pytest
from kafka.partitioner.default import murmur2

from producers.kafka_client import KafkaIOError, KafkaSettings
from producers.rdkafka_producer import RdKafkaProducer, rdkafka_config
from tests.kafka_support import free_port


def test_security_settings_map_to_librdkafka_properties() -> None:
    settings = KafkaSettings(
        bootstrap_servers="a:9093,b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret",
        ssl_cafile="/ca.pem",
        ssl_certfile="/cert.pem",
        ssl_keyfile="/key.pem",
        ssl_password="k3y",
    )
    assert rdkafka_config(settings) == {
        "bootstrap.servers": "a:9093,b:9093",
        "client.id": "turbine-watch",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/cert.pem",
        "ssl.key.location": "/key.pem",
        "ssl.key.password": "k3y",
    }
    assert "s3cret" not in repr(settings)  # revealed to librdkafka only


def unreachable() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")


def test_a_record_the_broker_never_takes_fails_to_its_callback() -> None:
    """No broker at the address: the delivery times out and on_error hears of it."""
    producer = RdKafkaProducer(unreachable(), linger_ms=0, delivery_timeout_ms=1500)
    errors: list[KafkaIOError] = []
    producer.send("events", value=b"{}", key=b"7", on_error=errors.append)
    producer.send("events", value=b"{}", on_error=errors.append)
    assert len(producer) == 2
    producer.flush(timeout=20)  # failed records are done: nothing is left queued
    assert len(producer) == 0
    assert len(errors) == 2
    assert all(isinstance(e, KafkaIOError) and e.topic == "events" for e in errors)
    assert "delivery failed" in str(errors[0])


def test_flush_past_its_timeout_is_a_kafka_io_error() -> None:
    producer = RdKafkaProducer(unreachable(), delivery_timeout_ms=60_000)
    producer.send("events", value=b"x")
    start = time.monotonic()
    with pytest.raises(KafkaIOError, match="1 record"):
        producer.flush(timeout=0.5)
    assert time.monotonic() - start < 5
    producer.close(timeout=0)  # what is left is logged, not waited on


@pytest.mark.kafka
def test_records_land_where_kafka_python_puts_their_keys(
    kafka_servers: str, topic_factory, group_id: str
) -> None:
    """Keyed records: the Java client's murmur2 placement, as kafka-python's; headers kept."""
    from kafka import KafkaConsumer

    topic = topic_factory("rdk", partitions=6)
    producer = RdKafkaProducer(KafkaSettings(bootstrap_servers=kafka_servers))
    assert producer.partitions_for(topic) == set(range(6))
    errors: list[KafkaIOError] = []
    keys = [str(t).encode() for t in range(40)]
    for i, key in enumerate(keys):
        headers = [("event-id", f"e{i}".encode())]
        producer.send(topic, key=key, value=b"v%d" % i, headers=headers, on_error=errors.append)
    producer.send(topic, key=b"placed", value=b"at 4", partition=4, on_error=errors.append)
    producer.flush(timeout=30)
    assert errors == []
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_servers,
        group_id=group_id,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        got = {r.key: (r.partition, r.value, r.headers) for r in consumer}
    finally:
        consumer.close()
    for i, key in enumerate(keys):
        partition, value, headers = got[key]
        assert partition == (murmur2(key) & 0x7FFFFFFF) % 6
        assert value == b"v%d" % i
        assert headers == [("event-id", f"e{i}".encode())]
    assert got[b"placed"][0] == 4
    producer.close()
