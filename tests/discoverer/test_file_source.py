"""FileSource: a JSON list of builder objects."""
from __future__ import annotations

import os

import orjson
import pytest

from discoverer.sources.file import FileSource
from shared.errors import SourceError


async def test_reads_objects_and_rejects_the_rest(tmp_path):
    path = tmp_path / "builders.json"
    path.write_bytes(orjson.dumps([{"id": "a", "app": "web", "region": "ams", "ip": "127.0.0.2"}, 3, "x"]))
    answer = await FileSource(path).fetch()
    assert [r["id"] for r in answer.records] == ["a"]
    assert [e.reason for e in answer.rejected] == ["not_an_object", "not_an_object"]


async def test_rereads_only_when_the_file_changes(tmp_path):
    path = tmp_path / "builders.json"
    path.write_bytes(b"[]")
    source = FileSource(path)
    first = await source.fetch()
    assert await source.fetch() is first
    tmp = tmp_path / "new.json"
    tmp.write_bytes(orjson.dumps([{"id": "b", "ip": "127.0.0.3"}]))
    os.replace(tmp, path)
    assert [r["id"] for r in (await source.fetch()).records] == ["b"]


@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1}', None])
async def test_unreadable_files_raise_source_error(tmp_path, content):
    path = tmp_path / "builders.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError):
        await FileSource(path).fetch()
