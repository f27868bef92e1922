"""numpy's legacy `RandomState` stream, replayed in Python: the published ARC builder's random draws.

The published builder draws from numpy's global legacy RNG one call at a time (`np.random.shuffle`,
`randint`, `permutation`). `LegacyRandom` replays the very same stream: it takes raw 32-bit words from a
`RandomState(seed)` (the generator `np.random.seed(seed)` sets up) in blocks and applies numpy's legacy
bounded-integer algorithm itself, which is ~10x cheaper than a numpy call per draw. The global RNG is
left untouched.
"""
import numpy as np


class LegacyRandom:
    """Draws identical to numpy's legacy `RandomState(seed)` (= after `np.random.seed(seed)`).

    Legacy bounded integers are rejection-sampled from 32-bit MT19937 words: with
    `mask` = the smallest 2^k - 1 >= `max`, draw words until `word & mask <= max`; no word is
    drawn when `max == 0`. `randint(0, high)` uses max = high - 1 and `shuffle`/`permutation`
    swap item i with item `interval(i)` for i from n-1 down to 1. The tests check this against
    numpy itself.
    """

    _BLOCK = 1 << 16

    def __init__(self, seed: int):
        self._next_word = self._words(np.random.RandomState(seed)).__next__

    @classmethod
    def _words(cls, source: np.random.RandomState):
        """Endless raw MT19937 words; randint over the full uint32 range returns them in order."""
        while True:
            yield from source.randint(0, 1 << 32, size=cls._BLOCK, dtype=np.uint32).tolist()

    def interval(self, max_value: int) -> int:
        """Uniform integer in [0, max_value], as numpy's legacy `random_interval`."""
        if max_value == 0:
            return 0
        mask = (1 << max_value.bit_length()) - 1
        next_word = self._next_word
        while True:
            value = next_word() & mask
            if value <= max_value:
                return value

    def randint(self, high: int) -> int:
        """`np.random.randint(0, high)` for 1 <= high <= 2**32."""
        return self.interval(high - 1)

    def shuffle(self, items: list) -> None:
        """`np.random.shuffle(items)` (in place)."""
        interval = self.interval
        for i in range(len(items) - 1, 0, -1):
            j = interval(i)
            items[i], items[j] = items[j], items[i]

    def colour_map(self) -> list[int]:
        """`[0] + np.random.permutation(np.arange(1, 10))`: colour 0 (background) stays put."""
        perm = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        next_word = self._next_word
        # Shuffle perm[1:] in place: positions 9..2 swap with 1 + interval(i - 1); masks precomputed.
        for i, max_value, mask in _PERM_STEPS:
            while True:
                j = next_word() & mask
                if j <= max_value:
                    break
            perm[i], perm[j + 1] = perm[j + 1], perm[i]
        return perm


# (position in the map, interval max, mask) of the 8 swaps of a 9-element legacy shuffle.
_PERM_STEPS = tuple((k + 1, k, (1 << k.bit_length()) - 1) for k in range(8, 0, -1))
