import json

import pytest

from edge_agent.connectors.mapping import REASONS, PayloadMapper, Rejected
from edge_agent.connectors.settings import IngestSettings
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Quality, Reading


def mapper(**kw: object) -> PayloadMapper:
    return PayloadMapper(IngestSettings.model_validate(kw))


def reason_of(m: PayloadMapper, topic: str, payload: bytes) -> str:
    with pytest.raises(Rejected) as info:
        m.decode(topic, payload)
    return info.value.reason


def test_single_object_every_numeric_field() -> None:
    m = mapper(topics=["plant/{asset}/telemetry"])
    out = m.decode("plant/p1/telemetry", b'{"ts": 10.5, "temp": 40, "vib": 1.5, "unit": "C"}')
    assert out == [
        Reading("p1", "temp", 10.5, 40.0, Quality.GOOD),
        Reading("p1", "vib", 10.5, 1.5, Quality.GOOD),
    ]
    assert all(type(r.value) is float for r in out)


def test_signals_map_renames_and_selects() -> None:
    m = mapper(signals={"t": "temperature"})
    out = m.decode("plant/p1/telemetry", b'{"ts": 1, "t": 3, "other": 9}')
    assert out == [Reading("p1", "temperature", 1.0, 3.0)]


def test_batch_top_level_list_and_batch_field_ms() -> None:
    m = mapper(ts_unit="ms", batch_field="rows")
    rows = [{"ts": 1000, "a": 1}, {"ts": 2500, "a": 2}]
    as_list = m.decode("plant/x/telemetry", json.dumps(rows).encode())
    as_obj = m.decode("plant/x/telemetry", json.dumps({"rows": rows}).encode())
    assert as_list == as_obj == [Reading("x", "a", 1.0, 1.0), Reading("x", "a", 2.5, 2.0)]


def test_signal_topic_uses_value_field() -> None:
    m = mapper(topics=["site/{asset}/{signal}"], value_field="v")
    assert m.decode("site/m7/current", b'{"ts": 5, "v": 2.25}') == [
        Reading("m7", "current", 5.0, 2.25)
    ]
    assert m.subscriptions == ["site/+/+"]


def test_shared_subscription_kept_for_subscribe_stripped_for_match() -> None:
    m = mapper(topics=["$share/agents/plant/{asset}/telemetry"])
    assert m.subscriptions == ["$share/agents/plant/+/telemetry"]
    assert m.decode("plant/p2/telemetry", b'{"ts": 1, "a": 1}')[0].asset == "p2"


def test_every_rejection_reason() -> None:
    m = mapper(max_payload_bytes=64)
    t = "plant/p1/telemetry"
    cases = {
        "too_large": (t, b'{"ts": 1, "a": "' + b"x" * 80 + b'"}'),
        "not_json": (t, b"{not json"),
        "bad_type": (t, b'{"ts": "yesterday", "a": 1}'),
        "not_finite": (t, b'{"ts": 1, "a": NaN}'),
        "no_timestamp": (t, b'{"a": 1}'),
        "no_match": ("other/p1", b'{"ts": 1, "a": 1}'),
        "empty": (t, b'{"ts": 1, "label": "x"}'),
        "too_deep": (t, b"[" * 1000),
        "name_too_long": ("plant/" + "z" * 200 + "/telemetry", b'{"ts": 1, "a": 1}'),
        "implausible_ts": (t, b'{"ts": 1e30, "a": 1}'),
    }
    assert set(cases) == set(REASONS)
    roomy = mapper()  # a payload nested too deep is longer than 64 bytes
    for reason, (topic, payload) in cases.items():
        assert reason_of(roomy if reason == "too_deep" else m, topic, payload) == reason, reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1, "a": Infinity}', "not_finite"),
        (b'{"ts": 1, "a": 1e999}', "not_finite"),
        (b"[]", "empty"),
        (b"42", "bad_type"),
        (b'[{"ts": 1, "a": 1}, 7]', "bad_type"),
        (b'{"readings": {"ts": 1}}', "bad_type"),
        (b'{"ts": true, "a": 1}', "bad_type"),
        (b'{"ts": 1, "a": true}', "empty"),  # a bool is not a number
        (b"\xff\xfe", "not_json"),
    ],
)
def test_more_rejections(payload: bytes, reason: str) -> None:
    assert reason_of(mapper(), "plant/p1/telemetry", payload) == reason


def test_bad_item_rejects_the_whole_batch() -> None:
    m = mapper()
    payload = b'[{"ts": 1, "a": 1}, {"ts": 2, "a": 2}, {"a": 3}]'
    assert reason_of(m, "plant/p1/telemetry", payload) == "no_timestamp"


def test_mapped_field_of_wrong_type_is_bad_type() -> None:
    m = mapper(signals={"t": "temperature"})
    assert reason_of(m, "plant/p1/telemetry", b'{"ts": 1, "t": "hot"}') == "bad_type"


def test_wrong_number_of_levels_does_not_match() -> None:
    m = mapper()
    assert reason_of(m, "plant/p1/telemetry/extra", b'{"ts": 1, "a": 1}') == "no_match"
    assert reason_of(m, "plant//telemetry", b'{"ts": 1, "a": 1}') == "no_match"


@pytest.mark.parametrize(
    "pattern",
    ["plant/telemetry", "plant/{asset}/{asset}", "plant/x{asset}/t", "plant/{unit}/{asset}"],
)
def test_bad_patterns_name_the_setting(pattern: str) -> None:
    with pytest.raises(ConfigError, match="EDGE_INGEST__TOPICS"):
        mapper(topics=[pattern])


NOW = 1_800_000_000.0


def at_now(**kw: object) -> PayloadMapper:
    return PayloadMapper(IngestSettings.model_validate(kw), clock=lambda: NOW)


def rejection(m: PayloadMapper, payload: bytes, topic: str = "plant/p1/telemetry") -> Rejected:
    with pytest.raises(Rejected) as info:
        m.decode(topic, payload)
    return info.value


@pytest.mark.parametrize("depth", [999, 1000, 5000, 100_000])
def test_deep_nesting_is_rejected_as_too_deep_without_recursion_error(depth: int) -> None:
    m = mapper(max_payload_bytes=1_000_000)
    for payload in (b"[" * depth, b"[" * depth + b"]" * depth, b'{"a":' * depth):
        assert rejection(m, payload).reason in ("too_deep", "not_json", "bad_type")
    assert rejection(m, b"[" * depth + b"NaN" + b"]" * depth).reason in ("too_deep", "not_finite")
    assert rejection(m, b"[" * 5000).reason == "too_deep"


def test_over_long_names_are_rejected_where_they_enter() -> None:
    m = mapper(max_name_bytes=16, topics=["plant/{asset}/{signal}"])
    assert rejection(m, b'{"ts": 1, "value": 1}', "plant/" + "a" * 17 + "/t").reason == (
        "name_too_long"
    )
    assert rejection(m, b'{"ts": 1, "value": 1}', "plant/p/" + "s" * 17).reason == "name_too_long"
    assert m.decode("plant/" + "a" * 16 + "/t", b'{"ts": 1, "value": 1}')[0].asset == "a" * 16
    # Four bytes a character: eight characters of an emoji are 32 bytes.
    assert rejection(m, b'{"ts": 1, "value": 1}', "plant/" + "\U0001f600" * 5 + "/t").reason == (
        "name_too_long"
    )
    fields = mapper(max_name_bytes=16)
    body = b'{"ts": 1, "' + b"f" * 17 + b'": 1}'
    assert rejection(fields, body).reason == "name_too_long"


def test_milliseconds_under_seconds_are_rejected_and_the_reason_says_so() -> None:
    m = at_now()
    rej = rejection(m, b'{"ts": %d, "a": 1}' % int(NOW * 1000))
    assert rej.reason == "implausible_ts"
    assert "EDGE_INGEST__TS_UNIT=ms" in rej.detail
    ms = at_now(ts_unit="ms")
    assert ms.decode("plant/p1/telemetry", b'{"ts": %d, "a": 1}' % int(NOW * 1000))[0].ts == NOW
    rej = rejection(ms, b'{"ts": %d, "a": 1}' % int(NOW))
    assert rej.reason == "implausible_ts"
    assert "EDGE_INGEST__TS_UNIT=s" in rej.detail


def test_time_far_from_the_gateway_clock_is_implausible() -> None:
    m = at_now(ts_max_ahead_s=3600, ts_max_age_s=86400)
    assert m.decode("plant/p1/telemetry", b'{"ts": %d, "a": 1}' % (NOW + 3000))
    assert rejection(m, b'{"ts": %d, "a": 1}' % (NOW + 4000)).reason == "implausible_ts"
    old = rejection(m, b'{"ts": %d, "a": 1}' % (NOW - 90_000), "plant/p2/telemetry")
    assert old.reason == "implausible_ts"
    assert "EDGE_INGEST__TS_MAX_AGE_S" in old.detail
    # One bad reading rejects its whole batch.
    batch = b'[{"ts": %d, "a": 1}, {"ts": 1e30, "a": 2}]' % NOW
    assert rejection(m, batch, "plant/p3/telemetry").reason == "implausible_ts"


def test_one_message_cannot_move_an_assets_clock_a_second_one_confirms() -> None:
    m = at_now(ts_max_jump_s=300)
    t = "plant/p1/telemetry"
    assert m.decode(t, b'{"ts": %d, "a": 1}' % (NOW - 100))
    # A lone outlier five days ahead is held back; the asset's next reading goes on.
    rej = rejection(m, b'{"ts": %d, "a": 1}' % (NOW + 5 * 86400))
    assert rej.reason == "implausible_ts"
    assert "EDGE_INGEST__TS_MAX_JUMP_S" in rej.detail
    assert m.decode(t, b'{"ts": %d, "a": 2}' % (NOW - 99))[0].ts == NOW - 99
    # Outliers far apart never confirm each other.
    assert rejection(m, b'{"ts": %d, "a": 1}' % (NOW + 4000)).reason == "implausible_ts"
    assert rejection(m, b'{"ts": %d, "a": 1}' % (NOW + 9000)).reason == "implausible_ts"
    # A real jump (a device back after an outage): the second message near it confirms it.
    assert m.decode(t, b'{"ts": %d, "a": 3}' % (NOW + 9001))[0].ts == NOW + 9001
    assert m.decode(t, b'{"ts": %d, "a": 4}' % (NOW + 9002))[0].ts == NOW + 9002
    # Other assets keep their own clocks.
    assert m.decode("plant/p2/telemetry", b'{"ts": %d, "a": 1}' % (NOW - 50))
