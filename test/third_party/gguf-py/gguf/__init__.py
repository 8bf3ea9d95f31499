# Written for bitloom (not an upstream file): the upstream __init__.py also
# imports vocab, metadata, tensor_mapping, utility and lazy, which this
# trimmed copy does not carry.
from .constants import *
from .quants import *
from .gguf_writer import *
from .gguf_reader import *
