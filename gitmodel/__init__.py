"""gitmodel: machine-learning checkpoints in plain git.

Layers, bottom to top (imports only point down):
    formats/    bytes -> segments and tensor descriptions (no storage, no git)
    store/      chunking, codecs, packs, indexes, manifests (no git)
    pointer     the text committed to git in place of a checkpoint
    checkpoint  clean (file -> store + pointer) and smudge (pointer -> file)
    git/        filter process, configuration, attributes, drivers
    cli         thin command-line wiring
"""

__version__ = "0.1.0"
