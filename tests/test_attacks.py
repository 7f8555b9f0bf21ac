"""The attacks of splitgrad/attacks.py succeed where nothing protects the data, and fail under
secure aggregation and differential privacy."""

import numpy as np

import splitgrad as sg
from splitgrad import attacks, cli, nn, optim
from splitgrad.split import DPSGD


def _mlp(dropout=0.0, seed=0):
    sg.seed(seed)
    layers = [nn.Flatten(), nn.Dense(32, activation="relu")]
    if dropout:
        layers.append(nn.Dropout(dropout))
    model = nn.Sequential([*layers, nn.Dense(10)])
    model.compile(
        optimizer=optim.Adam(learning_rate=0.01),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_a_single_row_is_read_off_its_update_but_not_off_a_secure_or_noisy_sum():
    data = sg.datasets.load_digits()
    model = _mlp(dropout=0.1)
    model.fit(data.x_train, data.y_train, epochs=2, verbose=0, seed=0)
    before = model.get_weights()
    result = attacks.inversion_demo(model, data.x_test[:6], data.y_test[:6])
    assert result["mse"]["plain"] < 1e-8  # rebuilt to rounding, dropout or not
    assert result["mse"]["secure"] > 1e-2 and result["mse"]["dp"] > 1e-2
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_membership_inference_beats_chance_on_an_overfit_model_and_not_under_dp_sgd():
    data = sg.datasets.load_digits()
    x, y = data.x_train[:60], data.y_train[:60]
    members, others = (x, y), (data.x_test[:200], data.y_test[:200])
    overfit = _mlp()
    overfit.fit(x, y, batch_size=10, epochs=150, verbose=0, seed=0)
    leaky = attacks.membership(overfit, members, others)
    private = _mlp()
    private.compile(optimizer=optim.SGD(learning_rate=0.5), loss=private.loss)
    private.fit(
        x,
        y,
        batch_size=10,
        epochs=150,
        verbose=0,
        seed=0,
        way=DPSGD(clip=0.1, noise_multiplier=8.0),  # ε ≈ 2.8 at δ = 1e-5
    )
    guarded = attacks.membership(private, members, others)
    # 0.5 is chance; with 60 members the estimate itself wobbles by a few hundredths.
    assert leaky["auc"] > 0.7 and guarded["auc"] < 0.65, (leaky["auc"], guarded["auc"])
    assert leaky["auc"] - guarded["auc"] > 0.1


def test_attack_commands_write_their_pictures(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "digits-mlp", "--quick", "--quiet", "--out", str(run)]) == 0
    for kind, png in (
        ("gradient-inversion", "gradient_inversion.png"),
        ("membership", "membership.png"),
    ):
        assert cli.main(["attack", kind, str(run), "--out", str(tmp_path / "a")]) == 0
        assert (tmp_path / "a" / png).read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "plain FedAvg" in out and "AUC" in out
