"""What keeps runs logged by earlier versions of the package loading, in one place: each shim
names the stored runs it keeps working, and tests/test_compat.py holds a test for each (the
spectral-norm state's in tests/test_models.py, the old model-code path's in tests/test_serving.py).

- ``stored_config``: configs stored in checkpoints and run artifacts before 2026-11-23 (0b59c42)
  name the learning-rate decay in epochs (``train.lr_decay_epochs``), today a fraction of the
  run; those stored before 2026-12-05 (2380143) have no ``train.d_augment`` and ran the step
  without it.
- ``ADDED_LATER``: keys added after runs were made (from 2026-12-01, 7f6a733), with the value
  that means "as before": at that value they are left out of the config hash, so an interrupted
  run made before they existed is still found and resumed.
- ``check_discriminator_state``: an ``upsample_sn`` D saved before 5df4780 (2026-12-04) has
  biases in its spectrally normalised trunk, which the variant no longer has; loading it says so
  in one line (``IncompatibleState``) instead of listing unexpected keys.
- ``sums_fit``: a checkpoint written before a step metric was added (2026-12-01,
  9f87d38 and later) holds running sums of fewer scalars; the resumed run restarts that interval.
- ``pipeline/serving.py`` (a module of its own, at the path old models import): generators
  logged before the package layout of 2026-12-02 (85ca108) name ``pipeline.serving`` for their
  model class.
"""
from __future__ import annotations

from typing import Any

ADDED_LATER = {"train.instance_noise": 0.0, "model.continuous_codes": 0, "train.continuous_weight": 1.0,
               "eval.q_test_images": None, "train.mode_seeking": 0.0, "train.mode_seeking_after_epochs": 0.5,
               "train.mode_seeking_cap": 0.2, "train.d_augment": False, "train.d_augment_floor": 0.2,
               "eval.classifier_precision": "auto"}


class IncompatibleState(RuntimeError):
    """A saved state dict that today's networks cannot hold; the message says why and what to do."""


def stored_config(raw: dict, default_epochs: int) -> dict:
    """A stored config's keys as today's schema names them (``default_epochs``: the schema's
    ``train.epochs``, for a stored config that did not set it)."""
    train = raw.get("train") or {}
    if "lr_decay_epochs" in train:  # stored before the schedule became a fraction of the run
        train["lr_decay_fraction"] = train.pop("lr_decay_epochs") / train.get("epochs", default_epochs)
    if raw and "d_augment" not in train:  # stored before D judged changed copies: the step it ran
        raw.setdefault("train", train)["d_augment"] = False
    return raw


def hashed(key: str, value: Any) -> bool:
    """Whether ``key`` at ``value`` counts in the config hash: not where a key added later is at
    the value that means "as before"."""
    return not (key in ADDED_LATER and value == ADDED_LATER[key])


def check_discriminator_state(arch: str, saved: dict, own: dict) -> None:
    """Raises :class:`IncompatibleState` for an ``upsample_sn`` D saved with trunk biases."""
    if arch == "upsample_sn" and any(k.startswith("trunk.") and k.endswith("bias") and k not in own for k in saved):
        raise IncompatibleState(
            "this upsample_sn discriminator was saved with biases in its spectral-norm trunk, which the variant "
            "no longer has (docs/design.md); train the run again, or load it with a checkout older than commit "
            "5df4780")


def sums_fit(state: dict, n_keys: int) -> bool:
    """Whether a checkpoint's running sums of the step's scalars (none yet, or one per scalar)
    fit the ``n_keys`` the step logs today; sums saved for fewer are dropped, and the interval's
    next point then averages fewer steps."""
    return state["sums"] is None or state["sums"].shape[0] == n_keys
