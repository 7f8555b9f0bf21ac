"""The layers: the `Layer` base (layer.py) and one module per family of layers.

Nothing here knows about training: a layer builds its weights, computes its output and
describes itself as JSON. Users reach the layers through `splitgrad.nn`, which also holds
`Model` and `Sequential` (splitgrad/model.py).
"""
