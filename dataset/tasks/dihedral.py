"""The 8 symmetries of the square, by the published ids (ARC augmentation and Maze `--aug`).

0 identity, 1 rot90, 2 rot180, 3 rot270, 4 fliplr, 5 flipud, 6 transpose, 7 fliplr(rot90).
"""
import numpy as np

NUM_DIHEDRAL = 8
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # DIHEDRAL_INVERSE[t] undoes t
TRANSPOSING = (1, 3, 6, 7)  # the ids that swap rows and columns

# Each transform as slicing of a view (what np.rot90 / np.flip return, without their per-call overhead,
# which dominated the ARC builder's many small grids); the tests check them against np.rot90 / np.flip.
_VIEWS = (
    lambda g: g,
    lambda g: g.swapaxes(-2, -1)[..., ::-1, :],  # rot90
    lambda g: g[..., ::-1, ::-1],  # rot180
    lambda g: g.swapaxes(-2, -1)[..., :, ::-1],  # rot270
    lambda g: g[..., :, ::-1],  # fliplr
    lambda g: g[..., ::-1, :],  # flipud
    lambda g: g.swapaxes(-2, -1),  # transpose
    lambda g: g.swapaxes(-2, -1)[..., ::-1, ::-1],  # fliplr(rot90)
)


def dihedral_transform(grid: np.ndarray, trans_id: int) -> np.ndarray:
    """Transform `trans_id` of the last two axes (so a stack of grids is transformed at once), as a view."""
    if not 0 <= trans_id < NUM_DIHEDRAL:
        raise ValueError(f"dihedral trans_id must be in 0..7, got {trans_id}")
    return _VIEWS[trans_id](grid)


def inverse_dihedral_transform(grid: np.ndarray, trans_id: int) -> np.ndarray:
    return dihedral_transform(grid, DIHEDRAL_INVERSE[trans_id])
