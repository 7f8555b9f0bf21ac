"""regression: a small MLP with mean-squared error on the diabetes data set.

442 patients, 10 standardised features, a disease-progression score to predict. Targets are
standardised for training; R² on the test set is reported in original units.
"""

from splitgrad import nn, optim
from splitgrad.data import Standardizer
from splitgrad.datasets import load_diabetes

DESCRIPTION = "MLP 10-32-16-1 + MSE on diabetes (regression, reports R²)"
DEFAULTS = {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3}
QUICK = {"epochs": 2}
TASK = "regression"


def load_data(quick=False, seed=0):
    data = load_diabetes()
    # Targets in the hundreds would need a tiny learning rate; R² does not change with scale.
    scaler = Standardizer().fit(data.y_train.reshape(-1, 1))
    data.y_train = scaler.transform(data.y_train.reshape(-1, 1))
    data.y_test = scaler.transform(data.y_test.reshape(-1, 1))
    return data


def build_model(learning_rate, data):
    model = nn.Sequential(
        [
            nn.Dense(32, activation="relu"),
            nn.Dense(16, activation="relu"),
            nn.Dense(1),
        ]
    )
    model.compile(optimizer=optim.Adam(learning_rate=learning_rate), loss="mse", metrics=["mae"])
    return model
