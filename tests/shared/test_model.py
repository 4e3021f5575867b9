"""shared.model, shared.keys and shared.connect: records, validation, names, URLs."""
from __future__ import annotations

import pytest

from shared.connect import connect, redact
from shared.errors import ConfigError, RecordError
from shared.keys import Keys
from shared.model import DEFAULT_ALLOWED_NETWORKS, Builder, domain_of, make_builder, parse_networks

ALLOWED = parse_networks(DEFAULT_ALLOWED_NETWORKS)


def make(**fields):
    base = {"id": "abc", "app": "web", "region": "ams", "ip": "fdaa::1"}
    return make_builder({**base, **fields}, sni_template="{id}.builders.internal", port=443, allowed=ALLOWED)


def test_json_round_trip_and_equality_ignore_seen_at():
    b = make()
    assert Builder.from_json(b.to_json()) == b
    assert b == Builder(b.id, b.app, b.region, b.address, b.port, b.sni, seen_at=123.0)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"id": "a"}', b'{"id":"a","app":"w","region":"r","address":"x","port":"p","sni":"s"}'])
def test_from_json_garbage_is_a_record_error(raw):
    with pytest.raises(RecordError):
        Builder.from_json(raw)


def test_endpoints():
    assert make(ip="127.0.0.2").endpoint == "127.0.0.2:443"
    assert make().endpoint == "[fdaa::1]:443"


@pytest.mark.parametrize("port", [0, 65536, "443", True, 1.5])
def test_a_bad_record_port_is_rejected(port):
    with pytest.raises(RecordError, match="bad_port"):
        make(port=port)


def test_a_record_port_overrides_the_default():
    assert make(port=8443).port == 8443


def test_ids_are_lowercased_into_the_sni_and_apps_and_regions_normalized():
    b = make(id="ABC", app=" Web ", region="AMS")
    assert (b.id, b.app, b.region, b.sni) == ("ABC", "web", "ams", "abc.builders.internal")


def test_missing_fields():
    with pytest.raises(RecordError, match="missing_field"):
        make_builder({"id": "a"}, sni_template="{id}.x.y", port=1, allowed=ALLOWED)


def test_an_empty_allow_list_allows_everything():
    b = make_builder({"id": "a", "app": "w", "region": "r", "ip": "10.1.2.3"}, sni_template="{id}.x.y", port=1, allowed=())
    assert b.address == "10.1.2.3"


@pytest.mark.parametrize("template,err", [("{nope}.x.y", "bad_sni_template"), ("{id}", "bad_sni"), ("{id}..y", "bad_sni")])
def test_bad_templates(template, err):
    with pytest.raises(RecordError, match=err):
        make_builder({"id": "a", "ip": "fdaa::1", "app": "w", "region": "r"}, sni_template=template, port=1, allowed=ALLOWED)


def test_domain_of():
    assert domain_of("{id}.builders.internal") == "builders.internal"
    for bad in ("builders.internal", "{id}", "{id}.{app}.internal"):
        with pytest.raises(RecordError):
            domain_of(bad)


def test_keys_share_one_hash_tag():
    keys = Keys("{fleet}")
    assert keys.routes == "{fleet}:routes"
    assert all(k.startswith("{fleet}:") for k in keys.fenced_write_keys())
    for bad in ("xds", "{}", "}{"):
        with pytest.raises(ConfigError):
            Keys(bad)


def test_redact_hides_passwords_only():
    assert redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("redis://u:p@h/0") == "redis://u:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_connect_rejects_unknown_schemes():
    with pytest.raises(ConfigError):
        connect("http://localhost:6379")


@pytest.mark.parametrize("fields,reason", [
    ({"id": None}, "bad_id"), ({"id": 12}, "bad_id"), ({"ip": ["fdaa::1"]}, "bad_address"),
    ({"app": None}, "bad_app"), ({"region": 3}, "bad_region"),
])
def test_non_string_fields_are_rejected(fields, reason):
    with pytest.raises(RecordError, match=reason):
        make(**fields)


def test_the_default_domain_is_the_default_templates_suffix():
    from shared.model import DEFAULT_DOMAIN, DEFAULT_SNI_TEMPLATE, domain_of

    assert domain_of(DEFAULT_SNI_TEMPLATE) == DEFAULT_DOMAIN
