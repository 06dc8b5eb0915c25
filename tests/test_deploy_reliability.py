"""Bad artifacts: truncated, corrupted, wrong version, forged headers; fuzzing; golden bytes."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import ArtifactError, ShaverError
from shaver.models.registry import build_model
from shaver.runtime.container import PREAMBLE, parse_container
from shaver.runtime.decode import decode_embedding
from shaver.runtime.layout import encode_embedding
from shaver.runtime.model import Artifact
from shaver.table.mask import MaskedEmbedding
from test_deploy_support import pruned_model, random_ids, torch_proba


class _Blob(bytes):
    """Artifact bytes with a short repr (hypothesis prints failing inputs)."""

    def __repr__(self) -> str:
        return f"<artifact: {len(self)} bytes>"


@pytest.fixture(scope="module")
def artifact_bytes(tmp_path_factory):
    model, _ = pruned_model("deepfm", field_dims=[3, 20, 4], keep=[1.0, 0.3, 0.02])
    path = tmp_path_factory.mktemp("art") / "a.shaver"
    export_artifact(model, path)
    return _Blob(path.read_bytes())


def _load(buf: bytes) -> Artifact:
    art = Artifact(parse_container(buf, "mem"))
    art.head  # noqa: B018 - builds and checks the head
    return art


def test_intact_bytes_load(artifact_bytes):
    assert _load(artifact_bytes).predict(random_ids([3, 20, 4], 4)).shape == (4,)


@pytest.mark.parametrize("cut", [0, 7, 23, 24, 100, -1, -9])
def test_truncated_file_raises(artifact_bytes, cut):
    with pytest.raises(ArtifactError, match="truncated|trailing|checksum"):
        _load(artifact_bytes[:cut])


def test_trailing_garbage_raises(artifact_bytes):
    with pytest.raises(ArtifactError, match="trailing"):
        _load(artifact_bytes + b"\0")


def test_wrong_magic_and_version(artifact_bytes):
    with pytest.raises(ArtifactError, match="magic"):
        _load(b"PK\x03\x04" + artifact_bytes[4:])
    future = artifact_bytes[:8] + struct.pack("<I", 3) + artifact_bytes[12:]
    with pytest.raises(ArtifactError, match=r"version 3 is not supported \(this shaver reads "
                                            r"versions 1, 2\)"):
        _load(future)
    # a v1 file relabelled v2 in its preamble: the header's own version disagrees
    relabelled = artifact_bytes[:8] + struct.pack("<I", 2) + artifact_bytes[12:]
    with pytest.raises(ArtifactError, match="header does not describe a shaver artifact v2"):
        _load(relabelled)
    reserved = artifact_bytes[:20] + struct.pack("<I", 1) + artifact_bytes[24:]
    with pytest.raises(ArtifactError, match="preamble"):
        _load(reserved)


def test_flipped_bit_in_every_section_raises(artifact_bytes):
    hlen = PREAMBLE.unpack_from(artifact_bytes)[2]
    header = json.loads(artifact_bytes[PREAMBLE.size:PREAMBLE.size + hlen])
    start = PREAMBLE.size + hlen
    targets = [(PREAMBLE.size + 5, "header checksum")]
    targets += [(start + e[4], f"checksum mismatch in section {e[0]}")
                for e in header["sections"] if e[5] > 0]
    for pos, message in targets:
        bad = bytearray(artifact_bytes)
        bad[pos] ^= 0x10
        with pytest.raises(ArtifactError, match=message):
            _load(bytes(bad))


def _one_dense_row_fewer(header):
    """Shrink the first dense field by a row: fewer values expected than are stored."""
    emb = header["embedding"]
    f = emb["layouts"].index("dense")
    emb["field_dims"][f] -= 1


def test_forged_headers_with_valid_checksums_raise(artifact_bytes):
    layouts = json.loads(artifact_bytes[PREAMBLE.size:PREAMBLE.size + PREAMBLE.unpack_from(
        artifact_bytes)[2]])["embedding"]["layouts"]
    assert layouts == ["dense", "bitmask", "sparse"]
    forgeries = {
        "inconsistent embedding description": lambda h: h["embedding"]["layouts"].__setitem__(
            0, "zzzzz"),
        "section emb.0.mask is missing": lambda h: h["embedding"]["layouts"].__setitem__(
            0, "bitmask"),
        "rows of the dense fields": lambda h: h["embedding"]["layouts"].__setitem__(1, "dense"),
        "count of stored values": _one_dense_row_fewer,
        "section emb.1.count is missing": lambda h: h["embedding"]["layouts"].__setitem__(
            1, "sparse"),
        "emb.1.mask shape": lambda h: h["embedding"]["field_dims"].__setitem__(1, 21),
        "head lacks tensor": lambda h: h["model"].__setitem__("name", "lr"),
        "no head for model": lambda h: h["model"].__setitem__("name", "xyz"),
        "inconsistent head tensors": lambda h: h["model"].__setitem__("mlp_dims", 7),
        "do not fit the model": _transpose_last_mlp_weight,
        "inconsistent position": lambda h: h["sections"][1].__setitem__(4, 9),
        "malformed section": lambda h: h["sections"][0].__setitem__(2, "f64"),
        "not describe": lambda h: h.__setitem__("format", "shaver-artifacx"),
        "inconsistent embedding": lambda h: h["embedding"].__setitem__("value_dtype", "fp33"),
        "lacks the model": lambda h: h.__setitem__("embedding", 12345678),
    }
    for message, edit in forgeries.items():
        with pytest.raises(ArtifactError, match=message):
            _load(_repack_padded(artifact_bytes, edit))


def test_decoder_rejects_unknown_layout_and_bad_sparse_index():
    weight = np.arange(96, dtype=np.float32).reshape(6, 16)
    mask = np.zeros((6, 16), bool)
    mask[[0, 3, 5], [1, 0, 1]] = True
    layouts, sections = encode_embedding(weight, mask, np.zeros((1, 16)), [6], "fp32")
    assert layouts == ["sparse"]
    arrays = {spec.name: arr for spec, arr in sections}
    with pytest.raises(ArtifactError, match="unknown layout"):
        decode_embedding(arrays, [6], 16, ["zzz"], "fp32", "mem")
    arrays["emb.0.cols"] = np.array([1, 1, 0], np.uint8)  # order kept, one per row: fine
    decode_embedding(arrays, [6], 16, ["sparse"], "fp32", "mem")
    arrays["emb.0.count"] = np.array([2, 0, 0, 0, 0, 1], np.uint8)  # row 0: cols 1, 1
    with pytest.raises(ArtifactError, match="column order"):
        decode_embedding(arrays, [6], 16, ["sparse"], "fp32", "mem")
    arrays["emb.0.cols"] = np.array([1, 16, 0], np.uint8)
    with pytest.raises(ArtifactError, match="sparse index"):
        decode_embedding(arrays, [6], 16, ["sparse"], "fp32", "mem")


def _transpose_last_mlp_weight(header) -> None:
    entry = next(e for e in header["sections"] if e[0] == "head/mlp.8.weight")
    entry[3] = entry[3][::-1]  # same bytes and checksum, a shape the head cannot use


def _repack_padded(buf: bytes, edit) -> bytes:
    """Rewrite the header JSON with ``edit(header)`` and fix its length and checksum."""
    _, version, hlen, _, _ = PREAMBLE.unpack_from(buf)
    header = json.loads(buf[PREAMBLE.size:PREAMBLE.size + hlen])
    edit(header)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return PREAMBLE.pack(b"\x89SHAVER\n", version, len(raw), zlib.crc32(raw), 0) + raw + \
        buf[PREAMBLE.size + hlen:]


def test_unreadable_path(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing.shaver")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutations_give_artifact_error_or_the_same_predictions(artifact_bytes, data):
    buf = bytearray(artifact_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    pos = data.draw(st.integers(0, len(buf) - 1))
    if kind == "flip":
        buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        del buf[pos:]
    elif kind == "insert":
        buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        buf[pos:pos + len(chunk)] = chunk
    x = random_ids([3, 20, 4], 8)
    try:
        art = _load(bytes(buf))
    except ArtifactError:
        return
    # Only bytes outside every checksum (alignment gaps) may change without an error.
    np.testing.assert_array_equal(art.predict(x), _load(artifact_bytes).predict(x))


def golden_model():
    """LR over fields of 2 and 3 values, d = 2, hand-set weights, half of the entries pruned."""
    model = build_model("lr", [2, 3], embed_dim=2).eval()
    weight = torch.tensor([[0.5, -1.0], [0.0, 2.0], [1.5, 0.25], [-0.75, 0.0], [3.0, -2.0]])
    mask = torch.tensor([[True, False], [True, True], [False, False], [True, False],
                         [False, True]])
    codebook = torch.tensor([[0.125, -0.125], [1.0, 0.5]])
    model.embedding = MaskedEmbedding(weight, mask, codebook, [2, 3])
    with torch.no_grad():
        model.bias.fill_(-0.5)
    return model


GOLDEN_SHA256 = "0fe9e8edba72a73dacbdc1e7dfc317cb2dea5b9225befd7c839e0c1c44be8dd4"


def test_golden_bytes(tmp_path):
    path = tmp_path / "golden.shaver"
    export_artifact(golden_model(), path, metadata={"library_version": "golden"})
    buf = path.read_bytes()
    assert buf[:8] == b"\x89SHAVER\n" and struct.unpack_from("<I", buf, 8)[0] == 1
    assert hashlib.sha256(buf).hexdigest() == GOLDEN_SHA256, len(buf)
    art = load_artifact(path)
    # ids (0, 2): field 0 row 0 -> [0.5, cb0[1]=-0.125]; row 2 of field 1... by hand:
    # row 0: kept [0.5, -] -> [0.5, -0.125]; row 2 (field 1): pruned -> [1.0, 0.5]
    logit = 0.5 - 0.125 + 1.0 + 0.5 - 0.5
    np.testing.assert_allclose(art.logits(np.array([[0, 2]])), [logit])
    # row 1 keeps an exact zero; row 4 keeps only column 1
    np.testing.assert_allclose(art.logits(np.array([[1, 4]])), [0.0 + 2.0 + 1.0 - 2.0 - 0.5])


def test_decoder_rejects_bad_bitmasks():
    weight = np.arange(50, dtype=np.float32).reshape(10, 5)
    mask = np.random.default_rng(0).random((10, 5)) < 0.5
    layouts, sections = encode_embedding(weight, mask, np.zeros((1, 5)), [10], "fp16")
    assert layouts == ["bitmask"]
    arrays = {spec.name: arr.copy() for spec, arr in sections}
    tables = decode_embedding(arrays, [10], 5, layouts, "fp16", "mem")
    assert tables.kept == mask.sum()
    arrays["emb.0.mask"][3, 0] |= 0x80  # a bit beyond d = 5
    with pytest.raises(ArtifactError, match="padding bits"):
        decode_embedding(arrays, [10], 5, layouts, "fp16", "mem")
    arrays["emb.0.mask"][3, 0] &= 0x1F
    arrays["emb.0.mask"][3, 0] ^= 0x01  # one kept entry more or less than stored values
    with pytest.raises(ArtifactError, match="count of stored values"):
        decode_embedding(arrays, [10], 5, layouts, "fp16", "mem")


def test_int8_first_order_without_its_scales_raises(tmp_path):
    model, _ = pruned_model("fm", field_dims=[3, 20, 4], keep=[1.0, 0.3, 0.02])
    path = tmp_path / "a.shaver"
    export_artifact(model, path, value_dtype="int8")
    buf = path.read_bytes()
    art = _load(buf)
    x = random_ids([3, 20, 4], 6)
    np.testing.assert_allclose(art.predict(x), torch_proba(model, x), atol=2e-2)

    def drop_scale(header):
        entry = next(e for e in header["sections"] if e[0].startswith("first_order_scale/"))
        entry[0] = "head/unused"

    with pytest.raises(ArtifactError, match="first-order table linear.weight.weight"):
        _load(_repack_padded(buf, drop_scale))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_forged_section_tables(artifact_bytes, data):
    """Section tables rewritten with valid checksums: never anything but ArtifactError."""
    hlen = PREAMBLE.unpack_from(artifact_bytes)[2]
    count = len(json.loads(artifact_bytes[PREAMBLE.size:PREAMBLE.size + hlen])["sections"])
    index = data.draw(st.integers(0, count - 1))
    slot = data.draw(st.sampled_from([0, 2, 3, 4, 5]))
    value = data.draw(st.one_of(
        st.integers(-2, 2**63), st.lists(st.integers(0, 2**40), max_size=9),
        st.sampled_from(["u8", "f32", "i64", "emb.values", "codebook", "head/out.weight"])))

    def edit(header):
        header["sections"][index][slot] = value

    x = random_ids([3, 20, 4], 4)
    try:
        art = _load(_repack_padded(artifact_bytes, edit))
    except ArtifactError:
        return
    np.testing.assert_array_equal(art.predict(x), _load(artifact_bytes).predict(x))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_forged_model_description(artifact_bytes, data):
    """Embedding/model descriptions rewritten with valid checksums: ArtifactError or same."""
    value = data.draw(st.one_of(
        st.integers(-3, 2**31), st.floats(allow_nan=False), st.none(), st.text(max_size=8),
        st.lists(st.integers(-1, 40), max_size=5),
        st.sampled_from(["dense", "bitmask", "sparse", "fp16", "int8", "lr", "dcn-v2"])))
    target = data.draw(st.sampled_from([
        ("embedding", "dim"), ("embedding", "value_dtype"), ("embedding", "field_dims"),
        ("embedding", "layouts"), ("model", "name"), ("model", "mlp_dims"),
        ("model", "embed_dim"), ("model", "field_dims")]))
    position = data.draw(st.integers(0, 2))

    def edit(header):
        holder = header[target[0]]
        current = holder.get(target[1])
        if isinstance(current, list) and current and not isinstance(value, list):
            current[position % len(current)] = value
        else:
            holder[target[1]] = value

    x = random_ids([3, 20, 4], 4)
    try:
        art = _load(_repack_padded(artifact_bytes, edit))
        got = art.predict(x)
    except ArtifactError:
        return
    except ShaverError:  # e.g. DataError: the forged field sizes reject these ids
        return
    np.testing.assert_array_equal(got, _load(artifact_bytes).predict(x))


def test_json_sections_must_be_valid(tmp_path):
    from shaver.runtime.container import SectionSpec, write_container

    for blob, message in [(b"[1, 2]", "not a JSON object"), (b"{bad", "not valid JSON")]:
        model, _ = pruned_model("lr", field_dims=[3, 20, 4], keep=[0.5, 0.5, 0.5])
        path = export_artifact(model, tmp_path / "a.shaver").path
        art = load_artifact(path)
        sections = [(SectionSpec(e[0], e[1], e[2], tuple(e[3])), art.container.arrays[e[0]])
                    for e in art.container.table if e[0] != "info"]
        sections.append((SectionSpec("info", "metadata", "json", (len(blob),)),
                         np.frombuffer(blob, np.uint8)))
        fields = {k: v for k, v in art.container.header.items()
                  if k not in ("sections", "format", "format_version")}
        write_container(path, fields, sections)
        with pytest.raises(ArtifactError, match=message):
            load_artifact(path)
