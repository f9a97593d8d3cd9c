"""Every Lightning internal cpl touches (cpl.core.lightning_compat), checked against the installed Lightning.

CI runs this file on the newest supported Lightning (the default install) and again on the oldest
(`.ci/run`), so a release that moves an internal fails here, not as a silent slow path.
"""

import re
import warnings
from importlib.metadata import version

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from packaging.specifiers import SpecifierSet

from cpl.core import lightning_compat as compat


def _pyproject_lightning_range() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    return re.search(r'"lightning([<>=!,.\d]+)"', text).group(1)


def test_installed_lightning_is_supported_and_range_matches_pyproject():
    assert compat.SUPPORTED == _pyproject_lightning_range()
    assert version("lightning") in SpecifierSet(compat.SUPPORTED)


class _Manual(compat.FastHookNameMixin, L.LightningModule):
    """Manual optimisation taking 3 optimizer steps per Lightning step, 2 of them off the wrapper."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.ones(2))
        self.fx_names: set = set()

    def train_dataloader(self):
        return [0] * 4

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)

    def training_step(self, batch, batch_idx):
        self.fx_names.add(self._current_fx_name)
        opt = self.optimizers()
        advance = compat.step_counter_incrementer(self.trainer)
        assert advance is not None, "this Lightning hides the manual step counter: the fast path would be lost"
        for i in range(3):
            opt.zero_grad()
            (self.w**2).sum().backward()
            if i < 2:
                opt.optimizer.step()
                advance(1)
            else:
                opt.step()


def test_step_counter_incrementer_advances_global_step():
    module = _Manual()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module)
    assert trainer.global_step == 4 * 3
    assert torch.allclose(module.w.detach(), torch.full((2,), 0.8**12))


def test_fast_hook_name_mixin_stores_lightnings_hook_name():
    module = _Manual()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module)
    assert module.fx_names == {"training_step"}
    assert "_current_fx_name" in vars(module) and "_current_fx_name" not in module._modules


def test_attached_trainer():
    module = _Manual()
    assert compat.attached_trainer(module) is None
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module)
    assert compat.attached_trainer(module) is trainer


class _Keyed(Callback):
    def __init__(self, a):
        self.a = a

    @property
    def state_key(self):
        return compat.callback_state_key(self, a=self.a)


def test_callback_state_key_matches_lightnings_format_and_is_cached():
    cb = _Keyed(3)
    assert cb.state_key == Callback._generate_state_key(cb, a=3) == "_Keyed{'a': 3}"
    cb.a = 4  # cached: cpl's callbacks never change their arguments after __init__
    assert cb.state_key == "_Keyed{'a': 3}"


def test_quiet_lightning_filters_only_the_listed_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.quiet_lightning()
        warnings.warn("The 'train_dataloader' does not have many workers which may be a bottleneck.")
        warnings.warn("something else")
    assert [str(w.message) for w in caught] == ["something else"]


@pytest.mark.parametrize("name", ["fit_loop", "global_step", "max_steps", "callbacks", "loggers"])
def test_public_trainer_attributes_cpl_reads(name):
    trainer = L.Trainer(max_steps=1, logger=False)
    assert hasattr(trainer, name)
