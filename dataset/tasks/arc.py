"""ARC encoding (docs/builders.md, "ARC"): every example is a 30x30 canvas of tokens.

PAD 0, EOS 1 (the row below and the column right of the grid), colour c -> c + 2. Augmented puzzle
names are `f"{task}|||t{trans}|||{colour map digits}"`.
"""
GRID_SIZE = 30  # ARC grids are at most 30x30
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD_ID = 0
EOS_ID = 1
COLOUR_OFFSET = 2  # token = colour + 2
NUM_COLOURS = 10
VOCAB_SIZE = NUM_COLOURS + COLOUR_OFFSET
NAME_SEPARATOR = "|||"
SET_NAME = "all"
# Standard ARC colours 0..9, as in the ARC task viewer.
PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
