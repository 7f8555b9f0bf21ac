"""Loading a checkpoint's optimizer states: the model's optimizer ("optimizer_state" in
config.json, arrays in optimizer.safetensors) and each extra one the model names in
`extra_optimizers()` ("extra_optimizer_states", arrays in optimizer.NAME.safetensors).

Every state is checked (settings as the constructor would, class, array dtypes) before any is
loaded, and the optimizers change together or not at all. A checkpoint saved before extra
optimizers were saved has no "extra_optimizer_states": it loads with a RuntimeWarning, and those
optimizers keep their fresh state. Any other mismatch between the model's names, the config and
the files raises CheckpointError naming the file.
"""

from __future__ import annotations

import warnings

from ._files import DAMAGED, CheckpointError
from ._manifest import (
    CONFIG,
    MAX_EXTRA_OPTIMIZERS,
    OPTIMIZER,
    extra_optimizer_file,
    extra_optimizer_name_problem,
)
from ._state import check_optimizer_arrays, extra_optimizers


def load_optimizers(model, config, contents, verify: bool) -> None:
    """The main optimizer's state and every extra optimizer's (`Model.extra_optimizers()`):
    all checked first, then loaded; if one still refuses its state, the ones already loaded
    get their previous state back, so the optimizers change together or not at all."""
    folder = contents.folder
    plan = [(model.optimizer, config["optimizer_state"], contents.optimizer, folder / OPTIMIZER)]
    plan += _extra_plan(model, config, contents)
    for opt, saved, arrays, source in plan:
        _check_optimizer(opt, saved, arrays, folder / CONFIG, source, verify)
    done = []
    try:
        for opt, saved, arrays, source in plan:
            before = opt.state_dict()
            _apply_optimizer(opt, saved, arrays, folder / CONFIG, source)
            done.append((opt, before))
    except CheckpointError:
        for opt, before in reversed(done):
            opt.load_state_dict(before)
        raise


def _extra_plan(model, config, contents) -> list:
    """(optimizer, saved settings, arrays, file) for each extra optimizer of the model. A
    checkpoint from before extra optimizers were saved leaves them as they are, with a
    warning; any other mismatch between the model's names, the config and the files is the
    file's fault."""
    folder = contents.folder
    try:
        own = extra_optimizers(model)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{folder / CONFIG}: the rebuilt model's extra_optimizers() fails "
            f"({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    saved = config.get("extra_optimizer_states")
    if saved is None:
        if contents.extra_optimizers:
            raise CheckpointError(
                f"{folder / extra_optimizer_file(next(iter(contents.extra_optimizers)))}: "
                f"{CONFIG} holds no 'extra_optimizer_states' for it. {DAMAGED}"
            )
        for name, opt in own.items():
            warnings.warn(
                f"{folder}: holds no state for the model's optimizer {name!r} (saved by a "
                f"splitgrad that kept only the main optimizer's); {type(opt).__name__} "
                f"{name!r} starts fresh (no moments, step 0 after load_model), so training "
                "resumed from this checkpoint is not the run that saved it",
                RuntimeWarning,
                stacklevel=4,
            )
        return []
    if (
        not isinstance(saved, dict)
        or len(saved) > MAX_EXTRA_OPTIMIZERS
        or any(extra_optimizer_name_problem(k) for k in saved)
        or not all(isinstance(v, dict) for v in saved.values())
    ):
        raise CheckpointError(
            f"{folder / CONFIG}: 'extra_optimizer_states' must map up to "
            f"{MAX_EXTRA_OPTIMIZERS} optimizer names to their settings. {DAMAGED}"
        )
    if set(saved) != set(own):
        raise CheckpointError(
            f"{folder / CONFIG}: the saved extra optimizers are {sorted(saved)[:10]}, the "
            f"model's are {sorted(own)}; the file was saved from a different model or altered"
        )
    stray = sorted(set(contents.extra_optimizers) - set(saved))
    if stray:
        raise CheckpointError(
            f"{folder / extra_optimizer_file(stray[0])}: no optimizer of that name in "
            f"{CONFIG}'s 'extra_optimizer_states'. {DAMAGED}"
        )
    return [
        (
            opt,
            saved[name],
            contents.extra_optimizers.get(name, {}),
            folder / extra_optimizer_file(name),
        )
        for name, opt in own.items()
    ]


def _check_optimizer(opt, saved, arrays, config_source, source, verify: bool) -> None:
    """Settings (validated as the constructor would), class and array dtypes."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{config_source}: an optimizer state must be an object. {DAMAGED}")
    if saved.get("class_name", type(opt).__name__) != type(opt).__name__:
        raise CheckpointError(
            f"{config_source}: the state for {source.name} was saved by "
            f"{str(saved.get('class_name'))[:40]}, the model uses {type(opt).__name__}; "
            "compile it with the saved optimizer"
        )
    try:
        type(opt).from_config(dict(saved.get("config", {})))
    except Exception as exc:  # noqa: BLE001 - the constructor's own validation
        raise CheckpointError(
            f"{config_source}: the saved optimizer settings are invalid "
            f"({type(exc).__name__}: {str(exc)[:300]}); the file was altered"
        ) from None
    check_optimizer_arrays(opt, arrays, source, verify)


def _apply_optimizer(opt, saved, arrays, config_source, source) -> None:
    try:
        opt.load_state_dict({**saved, "state": arrays})
    except Exception as exc:  # noqa: BLE001 - ValueError from validation, anything from a craft
        raise CheckpointError(
            f"{source} with its state in {config_source}: the optimizer state does not fit "
            f"the model ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
