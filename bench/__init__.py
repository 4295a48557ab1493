"""``murmur-bench``: Murmur's benchmark harness (see ``bench/main.py``)."""
