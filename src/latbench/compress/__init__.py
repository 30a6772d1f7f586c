"""Low-rank decomposition of PyTorch layers and whole models, and ONNX export."""

# Importing a method's module registers it in METHODS (a definition, not work).
from latbench.compress import cp, cur, svd, tt, tucker  # noqa: E402,F401
from latbench.compress.ranks import RankSpec, parse_rank_spec, resolve_rank  # noqa: E402,F401
from latbench.compress._linalg import reuse_subspaces  # noqa: E402,F401
