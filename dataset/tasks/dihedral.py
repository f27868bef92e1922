"""The 8 symmetries of the square, by the published ids (ARC augmentation and Maze `--aug`).

0 identity, 1 rot90, 2 rot180, 3 rot270, 4 fliplr, 5 flipud, 6 transpose, 7 fliplr(rot90).
"""
import numpy as np

NUM_DIHEDRAL = 8
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # DIHEDRAL_INVERSE[t] undoes t
TRANSPOSING = (1, 3, 6, 7)  # the ids that swap rows and columns


def dihedral_transform(grid: np.ndarray, trans_id: int) -> np.ndarray:
    """Transform `trans_id` of the last two axes (so a stack of grids is transformed at once)."""
    axes = (-2, -1)
    if trans_id == 0:
        return grid
    if trans_id in (1, 2, 3):
        return np.rot90(grid, k=trans_id, axes=axes)
    if trans_id == 4:
        return np.flip(grid, axis=-1)
    if trans_id == 5:
        return np.flip(grid, axis=-2)
    if trans_id == 6:
        return np.swapaxes(grid, -2, -1)
    if trans_id == 7:
        return np.flip(np.rot90(grid, k=1, axes=axes), axis=-1)
    raise ValueError(f"dihedral trans_id must be in 0..7, got {trans_id}")


def inverse_dihedral_transform(grid: np.ndarray, trans_id: int) -> np.ndarray:
    return dihedral_transform(grid, DIHEDRAL_INVERSE[trans_id])
