"""shaver.models: CTR models behind one interface (see :mod:`shaver.models.base`).

``build_model(name, field_dims, **sizes)`` in :mod:`shaver.models.registry` builds
``lr``, ``fm``, ``deepfm``, ``dcn-v2`` and ``dcn-mix``; :mod:`shaver.models.adapter` wraps
pytorch-fm style models (local ids + offsets) into the shaver interface.
"""
