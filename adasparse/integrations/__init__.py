"""Adapters to other libraries.

* :mod:`adasparse.integrations.hf`: α-entmax attention (fixed or learned α per head) for Hugging Face
  ``transformers`` models, through ``AttentionInterface`` / ``AttentionMaskInterface``. Needs the optional
  extra ``adasparse[hf]``; it is not imported here so that ``adasparse`` works without ``transformers``.
"""
