"""shaver.deploy: compact on-device artifacts, a compressed embedding module, ONNX export.

API (sizes: shaver.table.size.plan_bytes, the one size oracle of a plan)
    artifact.export_artifact(cut_or_pruned_dir_or_model, out, *, value_dtype, metadata,
                             include_feature_map, head_dtype) -> ExportResult
    artifact.load_artifact(path) -> shaver.runtime.Artifact                    (numpy only)
    embedding.CompressedEmbedding / embedding.compressed_model(artifact)  (torch; v1 and v2)
    onnx_export.export_onnx(artifact, out) -> Path                             (checked with ORT)
        (a model with bags takes ``ids`` + per bag ``<name>_values`` / ``<name>_offsets`` /
        ``<name>_weights``, EmbeddingBag-style: shaver.deploy.onnx_bags)
    fleet.fleet(run, attribution, fleet_yaml, out) -> FleetResult      (one artifact per class)
    CLI: shaver export | inspect | predict | fleet                             (deploy/cli.py)

Artifact format v1 / v2 (one file; details in shaver.runtime.container / shaver.runtime.layout)
    24-byte preamble: magic b"\\x89SHAVER\\n", uint32 version, uint32 header length,
    uint32 header CRC-32, uint32 reserved (0); a JSON header (sorted keys, space-padded to
    8 bytes) with the model config, the embedding description (dim, field_dims, per-field
    layout, value dtype) and the section table [name, kind, dtype, shape, offset, nbytes,
    crc32]; then the 8-byte-aligned sections. Every section has its own CRC-32; the loader
    checks magic, version, bounds, shapes, dtypes, alignment, checksums and index
    consistency and raises ArtifactError on any defect. Nothing is unpickled.

    Embedding, per field, the smallest of: ``dense`` (effective rows), ``bitmask`` (d-bit
    keep-mask per row + kept values; exactly ceil(d/8) index bytes per row, offsets are
    recomputed by popcount at load), ``sparse`` (uint8 count per row + uint8 column per kept
    value). Values fp32 / fp16 / int8 (one fp32 scale per field). Codebook (m, d) fp32.
    First-order tables (DeepFM/FM) in the more compact of the value and head dtypes (int8: a
    scale per field). Head tensors fp32; with ``head_dtype`` fp16, or int8 matrices with
    per-output-channel scales (format version 2, written only then: see
    shaver.runtime.headq).
    ``feature_map`` (optional JSON: dataset meta + vocabularies, for raw rows) and ``info``
    (budget, metrics, provenance) in a fixed 4096-byte JSON section, so that the size does
    not depend on values decided after the budget search.

    Bags (multi-valued fields, shaver.layout): the model config in the header carries the
    ``layout`` (field, max_len, pooling, weighted, keep of each bag) and the feature map the
    dataset's own (checked equal at export and load); the table, its sizes and masks are
    the same as for single-valued fields (a bag's ids are rows of its field). The runtime
    takes slots (batch, slots) with pads -1 and the bags' weights (batch, slots) or None.

Artifact format v2 (shaver.runtime.tiered; written only when the table needs it)
    Same container; the preamble and header say version 2, so a v1-only reader refuses the
    file by its version instead of misreading it. The table is a list of precision tiers
    (e.g. int8 for the most important kept entries, int4, int2 for the rest; pruned entries
    read the codebook), each with its value dtype (fp32, fp16, int8, int4 packed two per
    byte, int2 packed four per byte), its scales (one fp32 per field, or one fp16 per row
    that stores values: section kind ``scales``) and, per field, the smallest of the
    layouts empty / rest (no index: every entry no earlier tier holds) / rows (one bit per
    row) / bitmask / sparse / rowmap (a row bitmap + keep-bits of the listed rows). The
    codebook is left out when nothing is pruned. Export picks v2 for ``value_dtype`` int4,
    int2 or ``<dtype>/<field|row>`` (e.g. ``int4/row``) and for a model whose embedding is a
    ``shaver.table.tiers.TieredEmbedding`` whose plan v1 cannot store (what the chooser
    writes for low-bit or mixed plans). The runtime, ``CompressedEmbedding`` and ONNX compute
    exactly what the fake-quantised torch model (``shaver.table.tiers.tiered_copy``)
    computes; first-order weights next to an integer tier are stored int8 (per field).
"""
