"""pylog.codecs: every codec round-trips, reads what the reference libraries and Kafka's
clients write, is bounded against decompression bombs, and reports missing extras."""

import gzip
import struct
import warnings

import cramjam
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from pylog import codecs
from pylog.errors import CodecNotInstalledError, CorruptRecordError, UnsupportedCompressionTypeError
from pylog.records import RecordBatch, RecordBatchBuilder

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.codec as kafka_codec

CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", ["none", *CODECS])
@given(data=st.binary(max_size=5000))
@settings(max_examples=50)
def test_roundtrip(codec, data):
    assert codecs.decompress(codec, codecs.compress(codec, data)) == data


def test_ids_and_names():
    assert [codecs.codec_id(n) for n in ["none", "gzip", "snappy", "lz4", "zstd"]] == [0, 1, 2, 3, 4]
    assert codecs.codec_id("GZIP") == 1 and codecs.codec_id(3) == 3
    assert codecs.codec_name(4) == "zstd"
    for bad in ["lzma", 7, -1, 1.5, None]:
        with pytest.raises(UnsupportedCompressionTypeError):
            codecs.codec_id(bad)
    assert all(codecs.is_available(c) for c in CODECS)


def test_gzip_is_gzip_and_reads_concatenated_members():
    data = b"hello " * 100
    packed = codecs.compress("gzip", data)
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == data
    assert codecs.decompress("gzip", gzip.compress(b"a") + gzip.compress(b"b")) == b"ab"


def test_lz4_frame_independent_blocks_no_content_size():
    data = bytes(range(256)) * 1000
    packed = codecs.compress("lz4", data)
    assert packed[:4] == b"\x04\x22\x4d\x18"  # LZ4 frame magic
    flg = packed[4]
    assert flg & 0x20  # block independence
    assert not flg & 0x08  # no content size, as Kafka's Java writer
    assert lz4.frame.decompress(packed) == data
    linked = lz4.frame.compress(data, block_linked=True, content_checksum=True, store_size=True)
    assert codecs.decompress("lz4", linked) == data


def test_snappy_xerial_and_raw():
    data = bytes(range(256)) * 400  # > one 32 KiB xerial block
    packed = codecs.compress("snappy", data)
    assert packed[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    assert codecs.decompress("snappy", packed) == data
    raw = codecs.compress("snappy", data, xerial=False)
    assert raw[:8] != codecs.XERIAL_MAGIC
    assert codecs.decompress("snappy", raw) == data
    assert bytes(cramjam.snappy.decompress_raw(raw)) == data
    # kafka-python (Java-compatible xerial) and raw (librdkafka) outputs decode here.
    assert codecs.decompress("snappy", kafka_codec.snappy_encode(data)) == data
    assert codecs.decompress("snappy", kafka_codec.snappy_encode(data, xerial_compatible=False)) == data
    assert kafka_codec.snappy_decode(packed) == data


def test_xerial_version_fields_not_checked():
    data = b"x" * 1000
    packed = bytearray(codecs.compress("snappy", data))
    struct.pack_into(">ii", packed, 8, 7, 9)  # some writers put other values here
    assert codecs.decompress("snappy", bytes(packed)) == data


@pytest.mark.parametrize("bad", [
    b"\x82SNAPPY\x00\x00\x00",                                      # truncated header
    b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + b"\x00\x00",      # truncated length
    b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, 100) + b"abc",     # length past the end
    b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, -3) + b"abc",      # negative length
    b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, 3) + b"\xff\xff\xff",  # garbage block
])
def test_xerial_malformed(bad):
    with pytest.raises(CorruptRecordError):
        codecs.decompress("snappy", bad)


def test_zstd_with_and_without_content_size():
    data = b"zstd payload " * 500
    for write_size in (True, False):
        packed = zstandard.ZstdCompressor(write_content_size=write_size).compress(data)
        assert codecs.decompress("zstd", packed) == data
    streamed = zstandard.ZstdCompressor().compressobj()
    packed = streamed.compress(data) + streamed.flush()
    assert zstandard.frame_content_size(packed) == -1
    assert codecs.decompress("zstd", packed) == data


@pytest.mark.parametrize("codec", CODECS)
def test_truncated_streams_are_corrupt(codec):
    packed = codecs.compress(codec, bytes(range(256)) * 200)
    for cut in (1, len(packed) // 2, len(packed) - 1):
        with pytest.raises(CorruptRecordError):
            codecs.decompress(codec, packed[:cut])


@pytest.mark.parametrize("codec", CODECS)
def test_decompression_bomb(codec):
    bomb = codecs.compress(codec, bytes(8 << 20))
    with pytest.raises(CorruptRecordError, match="more than"):
        codecs.decompress(codec, bomb, max_uncompressed=1 << 20)
    assert len(codecs.decompress(codec, bomb, max_uncompressed=8 << 20)) == 8 << 20
    if codec != "snappy":  # snappy cannot compress better than ~21:1, within the default
        with pytest.raises(CorruptRecordError):
            codecs.decompress(codec, bomb)


def test_zstd_bomb_without_content_size():
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(4 << 20))
    with pytest.raises(CorruptRecordError):
        codecs.decompress("zstd", packed, max_uncompressed=1 << 20)


def test_default_limit():
    assert codecs.default_max_uncompressed(10) == 1 << 20
    assert codecs.default_max_uncompressed(1 << 20) == 64 << 20
    assert codecs.default_max_uncompressed(1 << 30) == codecs.DEFAULT_MAX_UNCOMPRESSED


@pytest.mark.parametrize("codec,extra", [("snappy", "pylog[snappy]"), ("zstd", "pylog[zstd]")])
def test_missing_optional_package(monkeypatch, codec, extra):
    data = RecordBatchBuilder(compression=codec)
    data.append(1, None, b"v" * 100)
    batch_bytes = data.build()
    attr, module = ("_cramjam", "cramjam") if codec == "snappy" else ("_zstandard", "zstandard")
    monkeypatch.setattr(codecs, attr, None)
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import now fails
    assert not codecs.is_available(codec)
    with pytest.raises(CodecNotInstalledError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        codecs.compress(codec, b"x")
    with pytest.raises(CodecNotInstalledError, match="pip install"):
        list(RecordBatch(batch_bytes))
    builder = RecordBatchBuilder(compression=codec)
    builder.append(1, None, b"v")
    with pytest.raises(CodecNotInstalledError):
        builder.build()
