"""Upload sources and response sinks (pure)."""

from __future__ import annotations

import gzip
import io
import zlib

import pytest

from airflow_provider_sfbulk.protocol.messages import (
    CHUNK_SIZE,
    BufferSink,
    Request,
    StreamSink,
    UploadSource,
    WritableCheckpoint,
)


def test_file_source_is_read_in_chunks_and_rewound(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"x" * 600_000)
    with path.open("rb") as handle:
        source = UploadSource(handle)
        assert source.rewindable
        sizes = [len(chunk) for chunk in source.sync_chunks()]
        assert sizes == [262_144, 262_144, 75_712]
        assert source.rewind()
        assert sum(len(c) for c in source.sync_chunks()) == 600_000


def test_iterator_source_cannot_rewind_once_consumed():
    source = UploadSource(iter([b"a", b"", bytearray(b"b")]))
    assert not source.rewindable
    assert source.rewind()  # nothing consumed yet
    assert list(source.sync_chunks()) == [b"a", b"b"]
    assert not source.rewind()


def test_bad_sources_are_refused():
    with pytest.raises(TypeError):
        UploadSource("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes, not str"):
        list(UploadSource(iter(["a"])).sync_chunks())  # type: ignore[list-item]
    with pytest.raises(TypeError, match="binary mode"):
        list(UploadSource(io.StringIO("a")).sync_chunks())  # type: ignore[arg-type]


def test_async_iterator_needs_the_async_hook():
    async def gen():
        yield b"a"

    with pytest.raises(TypeError, match="SalesforceBulkAsyncHook"):
        UploadSource(gen()).sync_chunks()


@pytest.mark.asyncio
async def test_async_chunks_from_every_kind_of_source(tmp_path):
    async def agen():
        yield b"a,"
        yield b"b\n"

    path = tmp_path / "f.csv"
    path.write_bytes(b"f\n")
    with path.open("rb") as handle:
        cases = [(agen(), b"a,b\n"), (iter([b"i", b"\n"]), b"i\n"), (b"raw", b"raw"), (handle, b"f\n")]
        for data, expected in cases:
            source = UploadSource(data)
            assert b"".join([chunk async for chunk in source.async_chunks()]) == expected


def test_gzip_sink_across_tiny_chunks_and_truncation():
    payload = b"Id,Name\n" * 10_000
    packed = gzip.compress(payload)
    out = io.BytesIO()
    sink = StreamSink("gzip", out)
    for i in range(0, len(packed), 7):
        sink.feed(packed[i : i + 7])
    sink.finish()
    assert out.getvalue() == payload
    assert sink.decoded_bytes == len(payload)
    assert sink.raw_bytes == len(packed)
    truncated = BufferSink("gzip")
    truncated.feed(packed[: len(packed) // 2])
    with pytest.raises(zlib.error):
        truncated.finish()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_chunk_is_decoded_in_pieces_of_at_most_chunk_size(encoding):
    # 1,000 to 1: one raw chunk holds about 6 MB of CSV; every parallel download would hold a piece that big
    payload = b'"0015fE000000001AAA","true","Acme, Corp."\n' * 150_000
    packed = gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)
    assert len(packed) < CHUNK_SIZE
    pieces: list[int] = []

    class Recorder(io.BytesIO):
        def write(self, data):  # type: ignore[override]
            pieces.append(len(data))
            return super().write(data)

    out = Recorder()
    sink = StreamSink(encoding, out)
    sink.feed(packed)
    sink.finish()
    assert out.getvalue() == payload
    assert max(pieces) == CHUNK_SIZE
    assert sum(pieces) == sink.decoded_bytes == len(payload)


def test_unknown_encoding_refused_and_buffer_capped():
    with pytest.raises(ValueError):
        BufferSink("br")
    sink = BufferSink(None, limit=4)
    with pytest.raises(ValueError):
        sink.feed(b"12345")


def test_checkpoint_truncates_back_to_the_start():
    out = io.BytesIO(b"head")
    out.seek(4)
    checkpoint = WritableCheckpoint(out)
    out.write(b"partial")
    assert checkpoint.restart(7)
    assert out.getvalue() == b"head"
    out.write(b"x")
    assert out.getvalue() == b"headx"


def test_request_path_strips_host_and_query():
    assert Request("GET", "https://h:1/a/b?token=x").path == "/a/b"
    assert Request("GET", "https://h").path == "/"
