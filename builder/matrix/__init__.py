"""The matrix: matrix.yaml read with every position kept, validated against its typed schema and the
TensorFlow/CUDA/cuDNN/Python rules, and expanded into cells.

Owns: schema.py (pydantic model), positions.py (YAML with FILE:LINE:COL), compat.py (rules as data), load.py
(Matrix, Cell, load_matrix), release.py (bump `release:`). May import: builder.errors, builder.settings.
"""
