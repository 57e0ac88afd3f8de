"""TrafficSplit: weighted label choice, sticky routing keys, seeded keyless picks."""

from __future__ import annotations

import json
import zlib
from collections import Counter

import pytest

from serving.core.traffic_split import TrafficSplit, TrafficSplitError, read_traffic_split


def test_keyless_picks_follow_the_weights_and_a_seed_reproduces_them():
    split = TrafficSplit.from_weights("m", {"stable": 80, "canary": 20}, seed=7)
    picks = [split.choose(None) for _ in range(10_000)]
    again = TrafficSplit.from_weights("m", {"stable": 80, "canary": 20}, seed=7)
    assert [again.choose(None) for _ in range(10_000)] == picks
    share = Counter(picks)["canary"] / len(picks)
    assert 0.18 <= share <= 0.22, share  # 20 %; binomial sd is 0.4 points at n=10,000


def test_a_routing_key_always_lands_on_the_label_its_hash_falls_in():
    split = TrafficSplit.from_weights("m", {"stable": 80, "canary": 20})
    # Labels sorted: canary covers [0, 20), stable [20, 100) of crc32(key) % 100.
    for key in (f"user-{i}" for i in range(200)):
        expected = "canary" if zlib.crc32(key.encode()) % 100 < 20 else "stable"
        assert {split.choose(key) for _ in range(3)} == {expected}


def test_zero_weight_labels_are_never_chosen():
    split = TrafficSplit.from_weights("m", {"a": 0, "b": 5}, seed=1)
    assert split.labels == ("b",)
    assert {split.choose(None) for _ in range(100)} == {"b"}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "lists no labels"),
        ({"a": 0}, "all weights are zero"),
        ({"a": -1}, "must be a non-negative integer"),
        ({"a": 1.5}, "must be a non-negative integer"),
        ({"a": True}, "must be a non-negative integer"),
    ],
)
def test_bad_weights_are_refused_with_the_reason(weights, message):
    with pytest.raises(TrafficSplitError, match=message):
        TrafficSplit.from_weights("m", weights)


def test_the_file_sets_header_seed_and_weights(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(
        json.dumps({"routing_header": "X-User", "seed": 3, "models": {"m": {"a": 1, "b": 3}}})
    )
    config = read_traffic_split(str(path))
    assert config.routing_header == "x-user"
    expected = TrafficSplit.from_weights("m", {"a": 1, "b": 3}, seed=3)
    assert [config.splits["m"].choose(None) for _ in range(50)] == [
        expected.choose(None) for _ in range(50)
    ]
    path.write_text(json.dumps({"seed": "x", "models": {}}))
    with pytest.raises(TrafficSplitError, match="seed must be an integer"):
        read_traffic_split(str(path))
