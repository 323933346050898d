"""Sealed envelopes: round trips, no personal data in clear, every tampering rejected.

Real keys and real crypto throughout. ``receive`` below does what the warehouse
does with a file: read the header, verify the device signature, open.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.envelope.header import (
    SUITES,
    Header,
    manifest_bytes,
    parse_manifest,
    segment_matches,
    verify_header,
)
from sync.envelope.opening import open_envelope
from sync.envelope.payload import (
    MAGIC_V1,
    PayloadError,
    PayloadWriter,
    payload_head,
    unpack_payload,
)
from sync.envelope.reader import (
    iter_segments,
    read_header,
    read_prefix,
    read_segment,
    segment_offsets,
    write_envelope,
)
from sync.envelope.seal import LEAD_SIZE, EnvelopeWriter
from sync.errors import CryptoError, EnvelopeError
from sync.keys import (
    WarehouseGeneration,
    WarehousePrivate,
    WarehousePublic,
    init_device_keys,
    init_warehouse_keys,
    load_device_key,
    load_warehouse_private,
    rotate_warehouse_keys,
)

SS = 65536  # default segment size
SMALL = 256  # a small segment size for tests that need many segments
MARKERS = [
    b"000.00.20.H56-230512-0003",  # dossier code
    b"079123456789",  # citizen id number
    "Nguyễn Văn An".encode(),  # name
]
HEADER_KEYS = [
    "ciphertext_sha256",
    "ciphertext_size",
    "class",
    "created",
    "device_id",
    "doc_id",
    "enc",
    "key_id",
    "prefix_sha256",
    "segment_tags",
    "segments",
    "sig",
    "suite",
    "segment_size",
    "v",
]


@dataclasses.dataclass(frozen=True)
class Keys:
    device: Ed25519PrivateKey
    device_pub: Ed25519PublicKey
    warehouse: WarehousePublic
    warehouse_private: WarehousePrivate
    other_private: WarehousePrivate


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    home = tmp_path_factory.mktemp("keys")
    pub = init_device_keys(home / "device.key")
    init_warehouse_keys(home / "other.key", home / "other.pub")
    return Keys(
        device=load_device_key(home / "device.key"),
        device_pub=pub,
        warehouse=init_warehouse_keys(home / "warehouse.key", home / "warehouse.pub"),
        warehouse_private=load_warehouse_private(home / "warehouse.key"),
        other_private=load_warehouse_private(home / "other.key"),
    )


def seal(
    path: Path,
    data: bytes,
    keys: Keys,
    *,
    chunk: int | None = None,
    doc_id: str = "doc-0001",
    warehouse: WarehousePublic | None = None,
    **options: object,
) -> Header:
    with path.open("wb") as out:
        writer = EnvelopeWriter(
            out,
            device_id="H56-01234-a1",
            doc_id=doc_id,
            warehouse=warehouse or keys.warehouse,
            device_key=keys.device,
            **options,  # type: ignore[arg-type]
        )
        step = chunk or max(len(data), 1)
        for pos in range(0, len(data), step):
            writer.write(data[pos : pos + step])
        return writer.close()


def receive(path: Path, keys: Keys, warehouse: WarehousePrivate | None = None) -> bytes:
    header = read_header(path)
    verify_header(header, keys.device_pub)
    opened = open_envelope(
        header, read_prefix(path), iter_segments(path), warehouse or keys.warehouse_private
    )
    return b"".join(opened)


def opened(header: Header, prefix: bytes, segments: Iterable[bytes], keys: Keys) -> bytes:
    return b"".join(open_envelope(header, prefix, segments, keys.warehouse_private))


def identity(prefix_sha256: str, ciphertext_size: int, tags: Iterable[str]) -> str:
    """ciphertext_sha256 as the format defines it, written out independently."""
    blob = bytes.fromhex(prefix_sha256) + ciphertext_size.to_bytes(8, "big")
    return hashlib.sha256(blob + b"".join(bytes.fromhex(t) for t in tags)).hexdigest()


def resign(header: Header, keys: Keys, **changes: Any) -> Header:
    """A header the device itself signed with other values: only STREAM can catch it.

    ``ciphertext_sha256`` follows the forged tags and size unless it is given.
    """
    forged = dataclasses.replace(header, **changes)
    if "ciphertext_sha256" not in changes:
        digest = identity(forged.prefix_sha256, forged.ciphertext_size, forged.segment_tags)
        forged = dataclasses.replace(forged, ciphertext_sha256=digest)
    sig = keys.device.sign(forged.signed_bytes())
    return dataclasses.replace(forged, sig=base64.b64encode(sig).decode())


def tags(segments: list[bytes]) -> tuple[str, ...]:
    return tuple(s[-16:].hex() for s in segments)


# -- round trips --------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize(
    ("size", "segments"),
    [
        (0, 1),  # one segment that is only a tag
        (1, 1),
        (SS - 1, 1),
        (SS, 1),  # a full last segment: no empty segment after it
        (SS + 1, 2),
        (2 * SS, 2),
        (2 * SS + 1, 3),
        (3_000_000, 46),
    ],
)
def test_sealed_document_opens_to_the_same_bytes(
    tmp_path: Path, keys: Keys, suite: str, size: int, segments: int
) -> None:
    data = os.urandom(size)
    header = seal(tmp_path / "e", data, keys, suite=suite)
    assert (header.suite, header.segments, header.segment_size) == (suite, segments, SS)
    assert header.ciphertext_size == size + 16 * segments
    assert read_header(tmp_path / "e") == header
    assert receive(tmp_path / "e", keys) == data


@pytest.mark.parametrize("chunk", [1, 7, SMALL - 1, SMALL, SMALL + 1, 1000])
@pytest.mark.parametrize(("size", "segments"), [(5 * SMALL + 77, 6), (5 * SMALL, 5)])
def test_how_the_caller_chunks_writes_does_not_change_the_result(
    tmp_path: Path, keys: Keys, chunk: int, size: int, segments: int
) -> None:
    data = os.urandom(size)
    header = seal(tmp_path / "e", data, keys, chunk=chunk, segment_size=SMALL)
    assert (header.segments, header.ciphertext_size) == (segments, size + 16 * segments)
    assert read_header(tmp_path / "e") == header
    assert receive(tmp_path / "e", keys) == data


def test_writer_streams_segments_out_before_close(tmp_path: Path, keys: Keys) -> None:
    with (tmp_path / "e").open("wb") as out:
        writer = EnvelopeWriter(
            out, device_id="d1", doc_id="x", warehouse=keys.warehouse, device_key=keys.device
        )
        writer.write(os.urandom(10 * SS))
        # the tenth segment may be the last one: it waits for close
        assert out.tell() == LEAD_SIZE + len(writer.prefix) + 9 * (SS + 16)
        writer.close()


def test_data_key_is_forgotten_once_closed(tmp_path: Path, keys: Keys) -> None:
    with (tmp_path / "e").open("wb") as out:
        writer = EnvelopeWriter(
            out, device_id="d1", doc_id="x", warehouse=keys.warehouse, device_key=keys.device
        )
        writer.write(b"secret")
        writer.close()
        assert (writer._key, writer._aead) == (bytearray(32), None)
        with pytest.raises(EnvelopeError, match="already closed"):
            writer.write(b"more")


def test_personal_data_never_appears_in_clear(tmp_path: Path, keys: Keys) -> None:
    meta = json.dumps({"dossier": MARKERS[0].decode(), "owner": MARKERS[1].decode()})
    data = meta.encode() + b"\n".join(MARKERS) * 5000
    header = seal(tmp_path / "e", data, keys, segment_size=4096)
    published = (tmp_path / "e").read_bytes() + manifest_bytes(header, read_prefix(tmp_path / "e"))
    assert [m for m in MARKERS if m in published] == []
    assert hashlib.sha256(data).hexdigest().encode() not in published
    assert hashlib.sha256(data).digest() not in published


def test_header_carries_only_routing_fields(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "e", b"x", keys, doc_class="cover", created="2024-05-12T08:00:00Z")
    obj = json.loads(header.to_json())
    assert sorted(obj) == sorted(HEADER_KEYS)
    assert {k: obj[k] for k in ("v", "device_id", "doc_id", "class", "created", "suite")} == {
        "v": 1,
        "device_id": "H56-01234-a1",
        "doc_id": "doc-0001",
        "class": "cover",
        "created": "2024-05-12T08:00:00Z",
        "suite": "x25519",
    }
    assert obj["key_id"] == keys.warehouse.key_id
    prefix = json.loads(read_prefix(tmp_path / "e"))
    keys_ = ["created", "device_id", "doc_id", "enc", "key_id", "segment_size", "suite", "v"]
    assert sorted(prefix) == keys_


def test_segments_can_be_read_one_by_one(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "e", os.urandom(3 * SMALL + 1), keys, segment_size=SMALL)
    segments = list(iter_segments(tmp_path / "e"))
    assert [read_segment(tmp_path / "e", header, n) for n in range(header.segments)] == segments
    assert [len(s) for s in segments] == [header.segment_length(n) for n in range(4)]
    assert [len(s) for s in segments] == [SMALL + 16] * 3 + [1 + 16]
    assert tags(segments) == header.segment_tags
    start = LEAD_SIZE + len(read_prefix(tmp_path / "e"))
    blob = (tmp_path / "e").read_bytes()
    offsets = segment_offsets(header, start)
    assert [blob[o : o + n] for o, n in offsets] == segments
    with pytest.raises(EnvelopeError, match="segment 4 does not exist"):
        read_segment(tmp_path / "e", header, 4)


@pytest.mark.parametrize("size", [0, 3 * SMALL, 3 * SMALL + 5])
def test_envelope_reassembled_from_its_parts_is_byte_identical(
    tmp_path: Path, keys: Keys, size: int
) -> None:
    header = seal(tmp_path / "e", os.urandom(size), keys, segment_size=SMALL)
    with (tmp_path / "copy").open("wb") as out:
        write_envelope(out, header, read_prefix(tmp_path / "e"), iter_segments(tmp_path / "e"))
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "e").read_bytes()


def test_envelope_identity_commits_to_prefix_size_and_every_tag(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "e", os.urandom(3 * SMALL + 5), keys, segment_size=SMALL)
    prefix = read_prefix(tmp_path / "e")
    segments = list(iter_segments(tmp_path / "e"))
    size = sum(len(s) for s in segments)
    assert (header.ciphertext_size, header.prefix_sha256) == (
        size,
        hashlib.sha256(prefix).hexdigest(),
    )
    assert header.ciphertext_sha256 == identity(header.prefix_sha256, size, tags(segments))


def test_staged_segments_are_checked_against_the_signed_tags(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "e", os.urandom(2 * SMALL + 5), keys, segment_size=SMALL)
    s0, s1, s2 = iter_segments(tmp_path / "e")
    body_flipped = bytes([s1[0] ^ 1]) + s1[1:]
    tag_flipped = s1[:-1] + bytes([s1[-1] ^ 1])
    cases = [
        (0, s0),
        (1, s1),
        (2, s2),
        (3, s2),  # no such segment
        (-1, s2),
        (0, s1),  # the right length, another segment's tag
        (2, s0),  # the wrong length
        (1, s1[:-1]),
        (1, s1 + b"x"),
        (1, tag_flipped),
        (1, body_flipped),  # only decryption sees the body
        (2, b""),
    ]
    assert [segment_matches(header, n, data) for n, data in cases] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
        False,
    ]
    segments = [s0, body_flipped, s2]
    with pytest.raises(EnvelopeError, match="segment 1 fails authentication"):
        opened(header, read_prefix(tmp_path / "e"), segments, keys)


def test_manifest_round_trips_header_and_prefix(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "e", b"abc", keys)
    prefix = read_prefix(tmp_path / "e")
    assert parse_manifest(manifest_bytes(header, prefix)) == (header, prefix)


# -- tampering with a file ----------------------------------------------------


def flip_at(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))


def replace_bytes(path: Path, old: str, new: str) -> None:
    blob = path.read_bytes()
    assert blob.count(old.encode()) == 1
    path.write_bytes(blob.replace(old.encode(), new.encode()))


def find(path: Path, needle: bytes) -> int:
    return path.read_bytes().index(needle)


def segments_start(path: Path) -> int:
    return LEAD_SIZE + len(read_prefix(path))


def header_start(path: Path) -> int:
    return find(path, b'{"ciphertext_sha256"')


def forge_tag(path: Path, header: Header, *, with_identity: bool) -> None:
    """Write another tag for segment 1 into the file's header, and a matching identity."""
    forged = [*header.segment_tags[:1], "0" * 32, *header.segment_tags[2:]]
    replace_bytes(path, header.segment_tags[1], forged[1])
    if with_identity:
        digest = identity(header.prefix_sha256, header.ciphertext_size, forged)
        replace_bytes(path, header.ciphertext_sha256, digest)


FILE_TAMPERING: list[tuple[str, Callable[[Path, Header], object], str]] = [
    ("magic", lambda p, h: flip_at(p, 0), r"not a sohoa envelope"),
    ("version", lambda p, h: flip_at(p, 8), r"unsupported envelope version 0"),
    ("prefix byte", lambda p, h: flip_at(p, find(p, b'"doc_id":"') + 10), r"prefix does not match"),
    ("enc in prefix", lambda p, h: flip_at(p, find(p, b'"enc":"') + 12), r"prefix does not match"),
    ("segment 0 body", lambda p, h: flip_at(p, segments_start(p) + 5), r"segment 0 fails auth"),
    ("segment 2 body", lambda p, h: flip_at(p, header_start(p) - 200), r"segment 2 fails auth"),
    (
        "segment 1 tag",
        lambda p, h: flip_at(p, segments_start(p) + 2 * (SMALL + 16) - 1),
        r"segment 1 does not match its signed tag",
    ),
    ("last tag", lambda p, h: flip_at(p, header_start(p) - 1), r"segment 3 does not match its"),
    (
        "header segment tag",
        lambda p, h: forge_tag(p, h, with_identity=False),
        r"ciphertext_sha256 does not match the segment tags",
    ),
    (
        "header segment tag and identity",
        lambda p, h: forge_tag(p, h, with_identity=True),
        r"device signature does not verify",
    ),
    (
        "header class",
        lambda p, h: replace_bytes(p, '"normal"', '"cover" '),
        r"device signature does not verify",
    ),
    (
        "signature",
        lambda p, h: flip_at(p, find(p, h.sig.encode()) + 3),
        r"device signature does not verify|sig is not",
    ),
    (
        "header json",
        lambda p, h: flip_at(p, header_start(p)),
        r"malformed envelope header: not JSON",
    ),
    ("end marker", lambda p, h: flip_at(p, p.stat().st_size - 1), r"no end marker"),
    (
        "cut short",
        lambda p, h: p.write_bytes(p.read_bytes()[: header_start(p) - 10]),
        r"no end marker|envelope truncated",
    ),
    (
        "segment removed",
        lambda p, h: p.write_bytes(p.read_bytes().replace(read_segment(p, h, 1), b"")),
        r"envelope file size does not match its header",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "reason"), [c[1:] for c in FILE_TAMPERING], ids=[c[0] for c in FILE_TAMPERING]
)
def test_tampered_envelope_file_is_rejected_with_its_reason(
    tmp_path: Path, keys: Keys, tamper: Callable[[Path, Header], object], reason: str
) -> None:
    path = tmp_path / "e"
    data = os.urandom(3 * SMALL + 5)  # four segments, the last one short
    header = seal(path, data, keys, segment_size=SMALL)
    assert receive(path, keys) == data  # intact, it opens
    tamper(path, header)
    with pytest.raises(EnvelopeError, match=reason) as err:
        receive(path, keys)
    assert err.value.hint


# -- tampering with the stream (what arrives over MQTT) -----------------------


@pytest.fixture
def two(
    tmp_path: Path, keys: Keys
) -> tuple[Header, bytes, list[bytes], Header, bytes, list[bytes]]:
    """Two envelopes of the same device, three segments each."""
    out = []
    for name in ("a", "b"):
        header = seal(tmp_path / name, os.urandom(2 * SMALL + 5), keys, segment_size=SMALL)
        out += [header, read_prefix(tmp_path / name), list(iter_segments(tmp_path / name))]
    return tuple(out)  # type: ignore[return-value]


def test_segments_reordered_are_rejected(keys: Keys, two: tuple) -> None:  # type: ignore[type-arg]
    header, prefix, segs = two[:3]
    swapped = [segs[1], segs[0], segs[2]]
    with pytest.raises(EnvelopeError, match="segment 0 does not match its signed tag"):
        opened(header, prefix, swapped, keys)
    forged = resign(header, keys, segment_tags=tags(swapped))
    with pytest.raises(EnvelopeError, match="segment 0 fails authentication"):
        opened(forged, prefix, swapped, keys)


def test_dropped_last_segment_is_rejected(keys: Keys, two: tuple) -> None:  # type: ignore[type-arg]
    header, prefix, segs = two[:3]
    with pytest.raises(EnvelopeError, match="envelope truncated: 2 of 3 segments"):
        opened(header, prefix, segs[:2], keys)
    forged = resign(
        header,
        keys,
        segments=2,
        segment_tags=tags(segs[:2]),
        ciphertext_size=2 * (SMALL + 16),
    )
    with pytest.raises(EnvelopeError, match="segment 1 fails authentication"):
        opened(forged, prefix, segs[:2], keys)


def test_extra_segment_is_rejected(keys: Keys, two: tuple) -> None:  # type: ignore[type-arg]
    header, prefix, segs = two[:3]
    other = two[5]
    with pytest.raises(EnvelopeError, match=r"more segments than its header \(3\)"):
        opened(header, prefix, [*segs, other[2]], keys)
    # pad the real last segment to full size so a 4-segment header is plausible
    extended = [*segs[:2], segs[1], segs[2]]
    forged = resign(
        header,
        keys,
        segments=4,
        segment_tags=tags(extended),
        ciphertext_size=sum(len(s) for s in extended),
    )
    with pytest.raises(EnvelopeError, match="segment 2 fails authentication"):
        opened(forged, prefix, extended, keys)


def test_segment_of_the_wrong_length_is_rejected_before_decrypting(
    keys: Keys,
    two: tuple,  # type: ignore[type-arg]
) -> None:
    header, prefix, segs = two[:3]
    with pytest.raises(EnvelopeError, match="segment 1 has the wrong length"):
        opened(header, prefix, [segs[0], segs[1] + b"x" * 10**6, segs[2]], keys)


def test_segment_from_another_envelope_is_rejected(keys: Keys, two: tuple) -> None:  # type: ignore[type-arg]
    header, prefix, segs = two[:3]
    mixed = [segs[0], two[5][1], segs[2]]
    with pytest.raises(EnvelopeError, match="segment 1 does not match its signed tag"):
        opened(header, prefix, mixed, keys)
    forged = resign(header, keys, segment_tags=tags(mixed))
    with pytest.raises(EnvelopeError, match="segment 1 fails authentication"):
        opened(forged, prefix, mixed, keys)


def test_header_swapped_from_another_envelope_is_rejected(keys: Keys, two: tuple) -> None:  # type: ignore[type-arg]
    header_a, prefix_a, segs_a, header_b, prefix_b, _ = two
    verify_header(header_b, keys.device_pub)  # a genuine header of the same device
    with pytest.raises(EnvelopeError, match="prefix does not match the header"):
        opened(header_b, prefix_a, segs_a, keys)
    with pytest.raises(EnvelopeError, match="segment 0 does not match its signed tag"):
        opened(header_b, prefix_b, segs_a, keys)


@pytest.mark.parametrize(
    "change", [{"doc_id": "doc-0002"}, {"device_id": "dev-9"}, {"created": "2020-01-01T00:00:00Z"}]
)
def test_header_that_disagrees_with_its_prefix_is_rejected(
    keys: Keys,
    two: tuple,  # type: ignore[type-arg]
    change: dict[str, str],
) -> None:
    header, prefix, segs = two[:3]
    with pytest.raises(EnvelopeError, match="prefix does not match the header"):
        opened(resign(header, keys, **change), prefix, segs, keys)


def test_prefix_moved_to_another_document_id_does_not_open(keys: Keys, two: tuple) -> None:  # type: ignore[type-arg]
    header, prefix, segs = two[:3]
    moved = prefix.replace(b'"doc_id":"doc-0001"', b'"doc_id":"doc-0002"')
    forged = resign(
        header, keys, doc_id="doc-0002", prefix_sha256=hashlib.sha256(moved).hexdigest()
    )
    with pytest.raises(EnvelopeError, match="data key does not open with warehouse key"):
        opened(forged, moved, segs, keys)


@pytest.mark.parametrize(
    "change",
    [
        {"ciphertext_sha256": hashlib.sha256(b"other").hexdigest()},
        {"segment_tags": ("0" * 32, "1" * 32, "2" * 32)},
        {"ciphertext_size": 2 * (SMALL + 16) + 20},
    ],
    ids=["identity", "tags", "size"],
)
def test_identity_that_disagrees_with_the_tags_is_rejected(
    keys: Keys,
    two: tuple,  # type: ignore[type-arg]
    change: dict[str, Any],
) -> None:
    header, prefix, segs = two[:3]
    forged = resign(header, keys, **{"ciphertext_sha256": header.ciphertext_sha256, **change})
    with pytest.raises(EnvelopeError, match="ciphertext_sha256 does not match the segment tags"):
        opened(forged, prefix, segs, keys)
    with pytest.raises(EnvelopeError, match="ciphertext_sha256 does not match the segment tags"):
        Header.from_json(forged.to_json())


@pytest.mark.parametrize(
    ("size", "chunk_sizes"),
    [(0, []), (1, [1]), (SMALL, [SMALL]), (2 * SMALL, [SMALL, SMALL]), (SMALL + 1, [SMALL, 1])],
)
def test_opened_stream_is_exactly_the_written_bytes(
    tmp_path: Path, keys: Keys, size: int, chunk_sizes: list[int]
) -> None:
    data = os.urandom(size)
    seal(tmp_path / "e", data, keys, segment_size=SMALL)
    chunks = list(
        open_envelope(
            read_header(tmp_path / "e"),
            read_prefix(tmp_path / "e"),
            iter_segments(tmp_path / "e"),
            keys.warehouse_private,
        )
    )
    assert ([len(c) for c in chunks], b"".join(chunks)) == (chunk_sizes, data)


def test_header_signed_by_another_device_is_rejected(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "e", b"x", keys)
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(EnvelopeError, match="device signature does not verify"):
        verify_header(header, stranger)


# -- warehouse keys -----------------------------------------------------------


def test_envelope_for_another_warehouse_is_a_clear_crypto_error(tmp_path: Path, keys: Keys) -> None:
    seal(tmp_path / "e", b"x", keys)
    with pytest.raises(CryptoError, match=f"unknown warehouse key id '{keys.warehouse.key_id}'"):
        receive(tmp_path / "e", keys, keys.other_private)
    impostor = WarehousePrivate(
        generations=(
            WarehouseGeneration(
                keys.warehouse.key_id,
                keys.other_private.current().x25519,
                keys.other_private.current().hybrid,
            ),
        ),
        signing=keys.other_private.signing,
    )
    with pytest.raises(CryptoError, match="data key does not open with warehouse key"):
        receive(tmp_path / "e", keys, impostor)


@pytest.mark.parametrize("suite", SUITES)
def test_envelope_sealed_before_rotation_still_opens(
    tmp_path: Path, keys: Keys, suite: str
) -> None:
    paths = (tmp_path / "w.key", tmp_path / "w.pub")
    old = init_warehouse_keys(*paths)
    seal(tmp_path / "old", b"before", keys, warehouse=old, suite=suite)
    new = rotate_warehouse_keys(*paths)
    seal(tmp_path / "new", b"after", keys, warehouse=new, suite=suite)
    private = load_warehouse_private(paths[0])
    assert (read_header(tmp_path / "old").key_id, read_header(tmp_path / "new").key_id) == (
        old.key_id,
        new.key_id,
    )
    assert [receive(tmp_path / n, keys, private) for n in ("old", "new")] == [b"before", b"after"]


# -- malformed input ----------------------------------------------------------


def header_obj(tmp_path: Path, keys: Keys) -> dict[str, object]:
    return json.loads(seal(tmp_path / "e", b"x" * 300, keys, segment_size=SMALL).to_json())  # type: ignore[no-any-return]


BAD_HEADERS: list[tuple[str, Callable[[dict[str, object]], object], str]] = [
    ("personal field", lambda h: h.update(owner_id="079123456789"), r"fields .* are not"),
    ("field missing", lambda h: h.pop("enc"), r"fields .* are not"),
    ("version", lambda h: h.update(v=2), r"unsupported envelope version 2"),
    ("suite", lambda h: h.update(suite="rsa"), r"unknown suite 'rsa'"),
    ("class", lambda h: h.update({"class": "urgent"}), r"class is not one of cover, normal"),
    ("segments", lambda h: h.update(segments=3), r"segment count does not match"),
    ("size too big", lambda h: h.update(ciphertext_size=10**6), r"ciphertext_size does not fit"),
    ("size negative", lambda h: h.update(ciphertext_size=-1), r"ciphertext_size is not a size"),
    ("size as text", lambda h: h.update(segments="2"), r"segments is not a size"),
    ("bool size", lambda h: h.update(segment_size=True), r"segment_size is not a size"),
    ("tiny segments", lambda h: h.update(segment_size=16), r"segment_size is out of range"),
    ("hash case", lambda h: h.update(prefix_sha256="A" * 64), r"prefix_sha256 is not a SHA-256"),
    ("tag list", lambda h: h.update(segment_tags="ab"), r"segment_tags is not a list of tags"),
    ("tag size", lambda h: h.update(segment_tags=["ab" * 32] * 2), r"segment_tags is not a list"),
    ("tag case", lambda h: h.update(segment_tags=["AB" * 16] * 2), r"segment_tags is not a list"),
    ("identity", lambda h: h.update(ciphertext_sha256="0" * 64), r"ciphertext_sha256 does not"),
    ("size", lambda h: h.update(ciphertext_size=300 + 31), r"ciphertext_sha256 does not match"),
    ("empty last", lambda h: h.update(ciphertext_size=SMALL + 32), r"ciphertext_size does not"),
    ("device id", lambda h: h.update(device_id="a/b"), r"device_id is not a valid id"),
    ("key id", lambda h: h.update(key_id="xyz"), r"key_id is not 16 hex digits"),
    ("sig", lambda h: h.update(sig="AAAA"), r"sig is not an Ed25519 signature"),
    ("enc", lambda h: h.update(enc="%%"), r"enc is not base64"),
    ("created", lambda h: h.update(created="yesterday"), r"created is not an ISO 8601"),
    ("not an object", lambda h: h.clear(), r"fields \[\] are not"),
]


@pytest.mark.parametrize(
    ("change", "reason"), [c[1:] for c in BAD_HEADERS], ids=[c[0] for c in BAD_HEADERS]
)
def test_malformed_header_is_rejected_with_its_reason(
    tmp_path: Path, keys: Keys, change: Callable[[dict[str, object]], object], reason: str
) -> None:
    obj = header_obj(tmp_path, keys)
    Header.from_json(json.dumps(obj).encode())  # the intact one parses
    change(obj)
    with pytest.raises(EnvelopeError, match=reason):
        Header.from_json(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"malformed manifest: not JSON"),
        (b"[1]", r"not a sohoa-manifest/1 document"),
        (b'{"format":"sohoa-manifest/2","header":{},"prefix":""}', r"not a sohoa-manifest/1"),
        (b'{"format":"sohoa-manifest/1","header":{},"prefix":""}', r"malformed envelope header"),
    ],
)
def test_garbage_manifest_is_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        parse_manifest(data)


def test_manifest_with_another_prefix_is_rejected(tmp_path: Path, keys: Keys) -> None:
    header = seal(tmp_path / "a", b"a", keys)
    seal(tmp_path / "b", b"b", keys)
    with pytest.raises(EnvelopeError, match="manifest prefix does not match its header"):
        parse_manifest(manifest_bytes(header, read_prefix(tmp_path / "b")))


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"suite": "aes"}, r"unknown suite 'aes'"),
        ({"doc_class": "vip"}, r"unknown class 'vip'"),
        ({"doc_id": "a/b"}, r"doc_id 'a/b' is not valid"),
        ({"doc_id": "a\n"}, r"doc_id 'a\\n' is not valid"),
        ({"segment_size": 32}, r"segment size 32 is out of range"),
        ({"created": "noon"}, r"created is not an ISO 8601 time"),
    ],
)
def test_writer_refuses_bad_options(
    tmp_path: Path, keys: Keys, options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        seal(tmp_path / "e", b"x", keys, **options)


def _signed_payload(meta: dict[str, object], pdf: bytes, key: Ed25519PrivateKey) -> bytes:
    out = bytearray()
    writer = PayloadWriter(out.extend, meta, device_id="dev-1", doc_id="doc-1", device_key=key)
    writer.write(pdf)
    writer.close()
    return bytes(out)


def test_metadata_changed_by_a_data_key_holder_fails_the_device_signature() -> None:
    key = Ed25519PrivateKey.generate()
    genuine = _signed_payload({"dossier_code": "H56.22-240101-0001"}, b"%PDF-1.7 body", key)
    # what a holder of the data key could make: other tags, the digest recomputed,
    # the device's signature kept (the signed header and its tags stand as they were)
    forged_body = payload_head({"dossier_code": "H56.22-240101-9999"}) + b"%PDF-1.7 body"
    forged = forged_body + hashlib.sha256(forged_body).digest() + genuine[-64:]
    device = ("dev-1", "doc-1", key.public_key())

    ok = unpack_payload([genuine], lambda _b: None, device=device, created="2026-12-03T00:00:00Z")
    with pytest.raises(PayloadError, match="not signed by its device"):
        unpack_payload([forged], lambda _b: None, device=device, created="2026-12-03T00:00:00Z")
    assert ok.signed and ok.meta == {"dossier_code": "H56.22-240101-0001"}


def test_an_unsigned_format_1_payload_is_accepted_only_from_before_format_2() -> None:
    pdf = b"%PDF-1.7 old"
    old = payload_head({"doc_type": "x"}, MAGIC_V1) + pdf + hashlib.sha256(pdf).digest()
    device = ("dev-1", "doc-1", Ed25519PrivateKey.generate().public_key())

    legacy = unpack_payload([old], lambda _b: None, device=device, created="2026-11-30T10:00:00Z")
    with pytest.raises(PayloadError, match="unsigned"):
        unpack_payload([old], lambda _b: None, device=device, created="2026-12-05T10:00:00Z")
    assert not legacy.signed and legacy.pdf_sha256 == hashlib.sha256(pdf).hexdigest()


def test_a_payload_streams_in_any_chunking() -> None:
    key = Ed25519PrivateKey.generate()
    pdf = bytes(range(256)) * 1000
    blob = _signed_payload({"a": 1}, pdf, key)
    device = ("dev-1", "doc-1", key.public_key())
    for size in (1, 7, 95, 96, 97, 4096, len(blob)):
        out = bytearray()
        chunks = [blob[i : i + size] for i in range(0, len(blob), size)]
        unpack_payload(chunks, out.extend, device=device, created="2026-12-03T00:00:00Z")
        assert bytes(out) == pdf
