"""Loss landscapes (Li et al. 2018): the loss around a trained model, along filter-normalised
random directions, on the line between two models, and on the plane of the training path.

    from splitgrad import landscape
    curve = landscape.curve_1d(model, x, y, resolution=51)           # L(θ* + a·d)
    grid = landscape.surface_2d(model, x, y, places=RayPlaces(2))    # L(θ* + a·d + b·e)

Where things are: directions.py (filter normalisation, PCA of a path), grid.py (evaluating
many points, batched, in inference mode, here or at places), views.py (the four views),
trajectory.py (recording the path during `fit`), plots.py (PNGs), cli.py (`splitgrad
landscape`).
"""

from .cli import add_cli as add_cli
from .cli import run_landscape as run_landscape
from .directions import filter_normalize as filter_normalize
from .directions import pca_directions as pca_directions
from .directions import random_directions as random_directions
from .grid import evaluate_grid as evaluate_grid
from .grid import evaluate_points as evaluate_points
from .trajectory import TrajectoryRecorder as TrajectoryRecorder
from .views import curve_1d as curve_1d
from .views import interpolation as interpolation
from .views import surface_2d as surface_2d
from .views import trajectory_plane as trajectory_plane
