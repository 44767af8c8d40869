"""Frame-id claims (`detektr.claims`) against a real Valkey server: one script call per batch."""

from __future__ import annotations

import redis

from detektr import keys
from detektr.claims import Claim, FrameIdClaims, refusal


def test_each_frame_id_is_claimed_once_and_a_reread_entry_keeps_its_claim(module_db_url):
    client = redis.Redis.from_url(module_db_url)
    claims = FrameIdClaims(client, ttl_s=60)
    first = claims.claim([("c-1", "1-0", None), ("c-2", "2-0", None), ("c-1", "3-0", None)])
    assert [claim.holder for claim in first] == [None, None, b"1-0"]  # the third is a duplicate within the batch
    assert [claim.duplicate(entry) for claim, entry in zip(first, ("1-0", "2-0", "3-0"))] == [False, False, True]
    again = claims.claim([("c-2", "2-0", None), ("c-2", "4-0", None)])  # entry 2-0 reclaimed, then a newcomer
    assert not again[0].duplicate("2-0") and again[1].duplicate("4-0")
    assert client.get(keys.frame_seen("c-1")) == b"1-0" and 0 < client.ttl(keys.frame_seen("c-1")) <= 60
    assert claims.claim([]) == []


def test_image_keys_are_measured_and_a_key_of_another_type_fails_its_own_frame_only(module_db_url):
    client = redis.Redis.from_url(module_db_url)
    client.set("img:ok", b"x" * 100)
    client.rpush("img:list", "a")
    client.hset(keys.frame_seen("k-bad"), "a", "b")  # a claim key someone else wrote
    found = FrameIdClaims(client, ttl_s=60).claim([
        ("k-1", "1-0", "img:ok"), ("k-2", "2-0", "img:missing"), ("k-3", "3-0", "img:list"),
        ("k-bad", "4-0", None), ("k-5", "5-0", None),
    ])
    assert [claim.image_size for claim in found[:2]] == [100, 0]
    assert isinstance(found[2].image_size, redis.ResponseError) and found[2].holder is None
    assert isinstance(found[3].holder, redis.ResponseError)
    assert found[4] == Claim(None, None)
    assert refusal(found[0], "1-0", "k-1", "img:ok", max_bytes=1000) is None
    assert refusal(found[0], "1-0", "k-1", "img:ok", max_bytes=99) == "image is 100 bytes, more than the limit of 99"
    assert refusal(found[1], "2-0", "k-2", "img:missing", 1000) == "image_key 'img:missing' does not exist"
    assert refusal(found[2], "3-0", "k-3", "img:list", 1000) is None  # the caller says what the key holds
    assert refusal(found[3], "4-0", "k-bad", None, 1000).startswith("frame_id could not be claimed: WRONGTYPE")
    assert refusal(Claim(b"9-0"), "5-0", "k-5", None, 1000) == "duplicate frame_id 'k-5' (first seen as entry 9-0)"
