import threading

import numpy as np

from likeness.core.memo import LruCache, content_key


def test_content_key_depends_on_pixels_shape_dtype_and_parameters():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert content_key(a, "p") == content_key(a.copy(), "p")
    assert content_key(a, "p") != content_key(b, "p")
    assert content_key(a, "p") != content_key(a, "q")
    assert content_key(a) != content_key(a.reshape(4, 12, 1))
    assert content_key(a) != content_key(a.astype(np.uint16))


def test_lru_evicts_least_recently_used_and_is_thread_safe():
    c = LruCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now the most recent
    c.put("c", 3)
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3
    big = LruCache(1000)
    threads = [threading.Thread(target=lambda i=i: [big.put(f"{i}-{j}", j) for j in range(200)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(big) == 1000
    disabled = LruCache(0)
    disabled.put("x", 1)
    assert disabled.get("x") is None and len(disabled) == 0  # size 0 keeps nothing
