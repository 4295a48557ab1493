"""Murmur's shared vocabulary: slots, ids, page tokens, input rules, and the
generated protobuf stubs (``murmur.v1``, built by ``make protos``)."""
