"""Compression codecs of Kafka's record batch v2: the records section of a batch is
compressed as one block with the codec named by bits 0-2 of the batch attributes.

====  ======  =====================================================================
id    name    format
====  ======  =====================================================================
0     none
1     gzip    RFC 1952 gzip member(s) (Java's ``GZIPOutputStream``), via :mod:`zlib`
2     snappy  xerial-framed (Java clients) on encode; raw snappy (librdkafka) or
              xerial-framed on decode, told apart by the xerial magic; via cramjam
3     lz4     LZ4 frame format with independent blocks (KIP-57), via :mod:`lz4.frame`
4     zstd    one zstd frame (content size optional), via :mod:`zstandard`
====  ======  =====================================================================

snappy and zstd are optional extras (``pip install pylog[snappy]`` /
``pip install pylog[zstd]``); using them without the package raises
:class:`~pylog.errors.CodecNotInstalledError`.

Every decoder is bounded: it never produces more than ``max_uncompressed`` bytes (a
decompression bomb raises :class:`~pylog.errors.CorruptRecordError` instead of
exhausting memory), and truncated or garbage input raises ``CorruptRecordError``.
"""

from __future__ import annotations

import struct
import zlib
from types import ModuleType

from pylog.errors import CodecNotInstalledError, CorruptRecordError, UnsupportedCompressionTypeError

__all__ = [
    "NONE",
    "GZIP",
    "SNAPPY",
    "LZ4",
    "ZSTD",
    "CODEC_NAMES",
    "DEFAULT_MAX_UNCOMPRESSED",
    "codec_id",
    "codec_name",
    "compress",
    "decompress",
    "default_max_uncompressed",
    "is_available",
]

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
_IDS = {name: cid for cid, name in CODEC_NAMES.items()}

#: Hard ceiling on the decompressed size of one batch (Kafka bounds a request at
#: socket.request.max.bytes, 100 MiB by default).
DEFAULT_MAX_UNCOMPRESSED = 100 * 1024 * 1024
#: Below this, any ratio is allowed: small batches of repetitive records compress far
#: better than 64:1, and a 1 MiB allocation is harmless.
_MIN_LIMIT = 1024 * 1024
_MAX_RATIO = 64

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_HEADER_SIZE = len(_XERIAL_HEADER)  # 16
# Java's SnappyOutputStream default block size.
_XERIAL_BLOCK = 32 * 1024
_ZSTD_LEVEL = 3  # zstd's (and Kafka's) default level


def default_max_uncompressed(compressed_size: int) -> int:
    """The decompressed-size limit used when none is given: 64 times the compressed
    size, at least 1 MiB and at most :data:`DEFAULT_MAX_UNCOMPRESSED` (100 MiB)."""
    return min(DEFAULT_MAX_UNCOMPRESSED, max(_MIN_LIMIT, _MAX_RATIO * compressed_size))


def codec_id(codec: int | str) -> int:
    """The numeric codec id (0-4) for a name (``"none"``, ``"gzip"``, ``"snappy"``,
    ``"lz4"``, ``"zstd"``) or an id.

    Raises
    ------
    UnsupportedCompressionTypeError
        An unknown name or id.
    """
    if isinstance(codec, str):
        cid = _IDS.get(codec.lower())
        if cid is None:
            raise UnsupportedCompressionTypeError(
                f"unknown compression {codec!r}: use one of {', '.join(_IDS)}")
        return cid
    if isinstance(codec, int) and codec in CODEC_NAMES:
        return codec
    raise UnsupportedCompressionTypeError(f"unknown compression codec id {codec!r} (ids are 0-4)")


def codec_name(codec: int | str) -> str:
    """The name of a codec id (or name)."""
    return CODEC_NAMES[codec_id(codec)]


# -- optional packages -------------------------------------------------------------------

_cramjam = None
_zstandard = None


def _lz4frame() -> ModuleType:
    """:mod:`lz4.frame` (a dependency, always there), imported on first use: not on the
    start-up path of ``pylog serve`` (#17).  The import lock makes a first use from
    several threads at once safe."""
    import lz4.frame

    return lz4.frame


def _snappy():
    global _cramjam
    if _cramjam is None:
        try:
            import cramjam
        except ImportError as exc:
            raise CodecNotInstalledError(
                "this batch uses snappy compression, which needs cramjam: "
                "pip install pylog[snappy]") from exc
        _cramjam = cramjam
    return _cramjam.snappy


def _zstd():
    global _zstandard
    if _zstandard is None:
        try:
            import zstandard
        except ImportError as exc:
            raise CodecNotInstalledError(
                "this batch uses zstd compression, which needs zstandard: "
                "pip install pylog[zstd]") from exc
        _zstandard = zstandard
    return _zstandard


def is_available(codec: int | str) -> bool:
    """True when ``codec`` can be encoded and decoded here (its package is installed)."""
    cid = codec_id(codec)
    try:
        if cid == SNAPPY:
            _snappy()
        elif cid == ZSTD:
            _zstd()
    except CodecNotInstalledError:
        return False
    return True


# -- encode ------------------------------------------------------------------------------

def compress(codec: int | str, data, *, xerial: bool = True) -> bytes:
    """Compress ``data`` (a bytes-like records section) with ``codec``.

    Parameters
    ----------
    codec
        Codec id or name.
    data
        Bytes-like object.
    xerial
        For snappy: write the xerial framing Java clients write (default), which every
        Kafka client reads; ``False`` writes one raw snappy block as librdkafka does.

    Raises
    ------
    CodecNotInstalledError
        snappy or zstd without its optional package.
    """
    cid = codec_id(codec)
    if cid == NONE:
        return bytes(data)
    if cid == GZIP:
        co = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
        return co.compress(data) + co.flush()
    if cid == LZ4:
        lz4 = _lz4frame()
        # Kafka's KafkaLZ4BlockOutputStream writes 64 KiB independent blocks.
        return lz4.compress(data, block_size=lz4.BLOCKSIZE_MAX64KB, block_linked=False,
                            content_checksum=False, store_size=False)
    if cid == SNAPPY:
        snappy = _snappy()
        if not xerial:
            return bytes(snappy.compress_raw(data))
        view = memoryview(data).cast("B")
        parts = [_XERIAL_HEADER]
        for start in range(0, len(view), _XERIAL_BLOCK):
            block = bytes(snappy.compress_raw(view[start:start + _XERIAL_BLOCK]))
            parts.append(struct.pack(">i", len(block)))
            parts.append(block)
        return b"".join(parts)
    # ZSTD
    return _zstd().ZstdCompressor(level=_ZSTD_LEVEL).compress(data)


# -- decode ------------------------------------------------------------------------------

def _bomb(codec: str, limit: int) -> CorruptRecordError:
    return CorruptRecordError(
        f"{codec} records section decompresses to more than {limit} bytes "
        "(a corrupt batch or a decompression bomb; pass a larger max_uncompressed "
        "if the batch is genuine)")


def decompress(codec: int | str, data, max_uncompressed: int | None = None) -> bytes:
    """Decompress a batch's records section.

    Parameters
    ----------
    codec
        Codec id or name.
    data
        Bytes-like compressed records section.
    max_uncompressed
        Largest decompressed size accepted; default :func:`default_max_uncompressed`
        of ``len(data)``.

    Raises
    ------
    CorruptRecordError
        Truncated or garbage input, or output larger than ``max_uncompressed``.
    CodecNotInstalledError
        snappy or zstd without its optional package.
    """
    cid = codec_id(codec)
    view = memoryview(data).cast("B")
    limit = default_max_uncompressed(len(view)) if max_uncompressed is None else max_uncompressed
    if cid == NONE:
        if len(view) > limit:
            raise _bomb("uncompressed", limit)
        return bytes(view)
    if cid == GZIP:
        return _gunzip(view, limit)
    if cid == LZ4:
        return _unlz4(view, limit)
    if cid == SNAPPY:
        return _unsnappy(view, limit)
    return _unzstd(view, limit)


def _gunzip(view: memoryview, limit: int) -> bytes:
    out = []
    total = 0
    rest = view
    try:
        while True:
            # wbits 47: gzip or zlib container, detected from the header.
            d = zlib.decompressobj(47)
            chunk = d.decompress(rest, limit - total + 1)
            total += len(chunk)
            if total > limit or d.unconsumed_tail:
                raise _bomb("gzip", limit)
            out.append(chunk)
            if not d.eof:
                raise CorruptRecordError("truncated gzip records section")
            rest = d.unused_data
            # Concatenated gzip members are one gzip stream (RFC 1952 section 2.2).
            if not rest:
                break
    except zlib.error as exc:
        raise CorruptRecordError(f"corrupt gzip records section: {exc}") from None
    return out[0] if len(out) == 1 else b"".join(out)


def _unlz4(view: memoryview, limit: int) -> bytes:
    d = _lz4frame().LZ4FrameDecompressor()
    try:
        out = d.decompress(view, max_length=limit + 1)
    except RuntimeError as exc:  # lz4.frame reports every decode error as RuntimeError
        raise CorruptRecordError(f"corrupt lz4 records section: {exc}") from None
    if len(out) > limit or (not d.eof and not d.needs_input):
        raise _bomb("lz4", limit)
    if not d.eof:
        raise CorruptRecordError("truncated lz4 records section")
    return out


def _snappy_block(snappy, block, limit: int, what: str) -> bytes:
    try:
        size = snappy.decompress_raw_len(block)
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise CorruptRecordError(f"corrupt {what}: {exc}") from None
    if size > limit:
        raise _bomb("snappy", limit)
    try:
        return bytes(snappy.decompress_raw(block))
    except Exception as exc:
        raise CorruptRecordError(f"corrupt {what}: {exc}") from None


def _unsnappy(view: memoryview, limit: int) -> bytes:
    snappy = _snappy()
    if view[:8] != XERIAL_MAGIC:
        return _snappy_block(snappy, view, limit, "raw snappy records section")
    # xerial: magic, version int32, compatible-version int32, then [length int32][block].
    # Some writers (Redpanda among them) put other values in the two version fields, so
    # they are not checked, as librdkafka and kafka-python do not.
    if len(view) < _XERIAL_HEADER_SIZE:
        raise CorruptRecordError("truncated xerial snappy header")
    pos, end = _XERIAL_HEADER_SIZE, len(view)
    out = []
    total = 0
    while pos < end:
        if end - pos < 4:
            raise CorruptRecordError("truncated xerial snappy block length")
        (n,) = struct.unpack_from(">i", view, pos)
        pos += 4
        if n < 0 or n > end - pos:
            raise CorruptRecordError(
                f"xerial snappy block length {n} at position {pos - 4} is outside the "
                f"{end - pos} bytes left")
        block = _snappy_block(snappy, view[pos:pos + n], limit - total, "xerial snappy block")
        total += len(block)
        out.append(block)
        pos += n
    return b"".join(out)


def _unzstd(view: memoryview, limit: int) -> bytes:
    zstd = _zstd()
    try:
        size = zstd.frame_content_size(view)
    except zstd.ZstdError as exc:
        raise CorruptRecordError(f"corrupt zstd records section: {exc}") from None
    if size > limit:
        raise _bomb("zstd", limit)
    try:
        # Frames without a content size (streaming writers) are decoded into at most
        # max_output_size bytes; more is an error, never an unbounded allocation.
        return zstd.ZstdDecompressor().decompress(view, max_output_size=limit)
    except zstd.ZstdError as exc:
        if size < 0 and "did not decompress full frame" in str(exc):
            raise CorruptRecordError(
                f"zstd records section is truncated or decompresses to more than {limit} bytes "
                "(pass a larger max_uncompressed if the batch is genuine)") from None
        raise CorruptRecordError(f"corrupt zstd records section: {exc}") from None
