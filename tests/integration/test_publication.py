"""Publication to Redis is atomic: a reader sees the previous result set or the new one."""

from __future__ import annotations

import threading

import redis

from clover import keys
from clover.config import Config
from jobs.publish import Publisher, ResultSet, clear_published
from stack.launcher import Launcher

SERVICES = [f"svc-{i}" for i in range(20)]


def result_set(generation: int) -> ResultSet:
    results = ResultSet(strings={keys.SPAN_COUNT: str(generation)})
    for service in SERVICES:
        results.hashes[keys.service_stats(service)] = {keys.RT_AVG: f"{generation}.00", "request_count": "1"}
    results.sets[keys.SPAN_URLS] = {f"/gen{generation}", "/"}
    results.zsets[keys.SPAN_URLS_Z] = {f"/gen{generation}": float(generation), "/": 1.0}
    results.lists["metrics_m"] = [str(generation)] * 100
    return results


def snapshot(client: redis.Redis) -> list[object]:
    with client.pipeline(transaction=True) as tx:
        tx.get(keys.SPAN_COUNT)
        for service in SERVICES:
            tx.hget(keys.service_stats(service), keys.RT_AVG)
        tx.smembers(keys.SPAN_URLS)
        tx.zrange(keys.SPAN_URLS_Z, 0, -1)
        tx.lindex("metrics_m", 99)
        return tx.execute()  # type: ignore[no-any-return]


def test_a_reader_polling_during_publication_never_sees_a_missing_or_mixed_set(
    stack: Launcher, store: redis.Redis, cfg: Config
) -> None:
    store.flushdb()
    publisher = Publisher(store)
    publisher.publish(result_set(1))
    problems: list[str] = []
    reads = 0
    done = threading.Event()

    def read() -> None:
        nonlocal reads
        reader = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        while not done.is_set():
            values = snapshot(reader)
            reads += 1
            generation = values[0]
            expected = [generation, *[f"{generation}.00"] * len(SERVICES), {f"/gen{generation}", "/"}]
            if values[: len(expected)] != expected or values[-1] != generation or not values[-2]:
                problems.append(repr(values))

    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    for generation in range(2, 60):
        publisher.publish(result_set(generation))
    done.set()
    reader_thread.join()
    assert problems == []
    assert reads > 10


def test_keys_that_lose_their_data_are_removed_and_clear_resets_everything(stack: Launcher, store: redis.Redis) -> None:
    store.flushdb()
    store.sadd(keys.VISIBILITY_SERVICES, "svc_0")
    publisher = Publisher(store)
    publisher.publish(result_set(1))
    smaller = result_set(2)
    del smaller.hashes[keys.service_stats("svc-5")]
    smaller.sets[keys.SPAN_URLS] = set()
    publisher.publish(smaller)
    assert not store.exists(keys.service_stats("svc-5"), keys.SPAN_URLS)
    assert store.hget(keys.service_stats("svc-4"), keys.RT_AVG) == "2.00"
    assert store.keys(f"{keys.PUBLISH_TMP_PREFIX}*") == []

    clear_published(store)
    assert [store.get(k) for k in keys.SYSTEM_COUNTS] == ["0", "0", "0"]
    assert store.hgetall(keys.service_stats("svc-0")) == {"min_rt": "NA", "avg_rt": "NA", "max_rt": "NA"}
    assert store.keys("metrics_*") == []
    assert not store.exists(keys.SPAN_URLS_Z, keys.service_stats("svc-4"), keys.PUBLISHED_KEYS)
