"""Per-layer key/value cache that grows in fixed steps."""

import mlx.core as mx

STEP = 256


class KVCache:
    def __init__(self):
        self.keys = None
        self.values = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        start, length = self.offset, keys.shape[2]
        if self.keys is None or start + length > self.keys.shape[2]:
            self.grow(keys, values, length)
        self.offset = start + length
        self.keys[..., start : self.offset, :] = keys
        self.values[..., start : self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    def trim(self, count: int) -> None:
        self.offset -= count

    def grow(self, keys: mx.array, values: mx.array, length: int) -> None:
        batch, heads, _, key_dim = keys.shape
        steps = (STEP + length - 1) // STEP
        new_keys = mx.zeros((batch, heads, steps * STEP, key_dim), keys.dtype)
        new_values = mx.zeros((batch, heads, steps * STEP, values.shape[3]), values.dtype)
        if self.keys is None:
            self.keys, self.values = new_keys, new_values
            return
        self.keys = mx.concatenate([self.keys[..., : self.offset, :], new_keys], axis=2)
        self.values = mx.concatenate([self.values[..., : self.offset, :], new_values], axis=2)
