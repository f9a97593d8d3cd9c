"""An ordinary Lightning project that knows nothing of cpl: a linear MLP student learns a teacher.

The DataModule holds two teachers (``pretrain``: rank 6, ``final``: rank 3) and a ``set_task``
method; the targets of a batch are computed by the current teacher when the batch is loaded.
The student is an ``nn.Sequential`` of bias-free linear layers trained by minibatch SGD with an
MSE loss; its learning rate lives in ``hparams`` and the optimizer only. ``LinearFlowReference`` is
the one piece written for cpl: a :class:`cpl.callbacks.Reference` for ``ODEReference``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset


def _teacher(n_out: int, n_in: int, rank: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    u = torch.linalg.qr(torch.randn(n_out, rank, generator=gen))[0]
    v = torch.linalg.qr(torch.randn(n_in, rank, generator=gen))[0]
    s = torch.linspace(2.0, 1.0, rank)
    return (u * s) @ v.T, u, s, v


class _Samples(Dataset):
    """Inputs are fixed; each target is made by the DataModule's current teacher when it is loaded."""

    def __init__(self, dm: "TeacherStudentData", x: torch.Tensor):
        self.dm, self.x = dm, x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        task = self.dm.task
        return self.x[i], self.dm.teachers[task] @ self.x[i], self.dm.task_names.index(task)


class _Stream(IterableDataset):
    """The same samples as a stream without a length (Lightning then keeps one batch loaded ahead)."""

    def __init__(self, dm: "TeacherStudentData", x: torch.Tensor):
        self.samples = _Samples(dm, x)

    def __iter__(self):
        return (self.samples[i] for i in range(len(self.samples)))


class TeacherStudentData(L.LightningDataModule):
    """Teacher-student regression with two teachers; ``set_task(name)`` chooses the current one.

    ``iterable=True`` serves the samples as a stream without a length, in a fixed order.
    """

    task_names = ("pretrain", "final")

    def __init__(
        self,
        n_in: int = 12,
        n_out: int = 8,
        n_train: int = 224,
        batch_size: int = 32,
        seed: int = 0,
        iterable: bool = False,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.teachers, self.bases = {}, {}
        for name, rank in (("pretrain", 6), ("final", 3)):
            w, u, s, v = _teacher(n_out, n_in, rank, gen)
            self.teachers[name], self.bases[name] = w, (u, s, v)
        self.x = torch.randn(n_train, n_in, generator=gen)
        self.batch_size, self.seed, self.iterable = batch_size, seed, iterable
        self.task = "pretrain"

    def set_task(self, name: str) -> None:
        self.task = name

    def teacher_basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, V)`` of the final teacher: shapes ``(n_out, 3)`` and ``(n_in, 3)``."""
        u, _, v = self.bases["final"]
        return u, v

    def train_dataloader(self) -> DataLoader:
        if self.iterable:
            return DataLoader(_Stream(self, self.x), batch_size=self.batch_size)
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(_Samples(self, self.x), batch_size=self.batch_size, shuffle=True, generator=gen)


class MLP(L.LightningModule):
    """A bias-free linear MLP ``sizes[0] -> ... -> sizes[-1]`` trained by SGD on the MSE."""

    def __init__(self, sizes: Sequence[int] = (12, 16, 16, 8), lr: float = 0.2, init_scale: float = 0.3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])])
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for layer in self.net:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * init_scale / layer.in_features**0.5)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class LinearFlowReference:
    """Gradient flow of a one-layer linear student on this task, per mode of the final teacher.

    With ``E[x x^T] = I`` and the mean squared error over ``n_out`` outputs, ``dW/dt = -(2/n_out)(W - W*)``,
    so each projection ``a_i = u_i^T W v_i`` relaxes to the current teacher's
    ``u_i^T W* v_i`` at rate ``2/n_out``; the teacher changes at the schedule's ``switch``. Exact for
    one layer under full-batch gradient flow; for deeper students it is a reference, and
    :meth:`conditions` says so. Quantity: ``a`` (one value per mode).
    """

    name = "one-layer gradient flow"

    def prepare(self, pl_module, schedule, lr: float, start_step: int, max_steps: int) -> None:
        dm = pl_module.trainer.datamodule
        u, v = dm.teacher_basis()
        self.u, self.v, self.lr, self.start = u.double(), v.double(), lr, start_step
        self.rate = 2.0 / u.shape[0]
        self.targets = {name: np.diag(self.u.T @ w.double() @ self.v).copy() for name, w in dm.teachers.items()}
        switches = [ev.start for ev in schedule if ev.kind == "switch"]
        self.switch = switches[0] if switches else None
        self.a0 = self.observe(pl_module)["a"]
        self.depth = len(pl_module.net)

    def _target(self, step: int) -> np.ndarray:
        return self.targets["final" if self.switch is None or step >= self.switch else "pretrain"]

    def predict(self, step: int) -> dict[str, np.ndarray]:
        a, t = self.a0.copy(), self.start
        for edge in sorted({step, *([self.switch] if self.switch and self.start < self.switch < step else [])}):
            target = self._target(t)
            a = target + (a - target) * np.exp(-self.rate * self.lr * (edge - t))
            t = edge
        return {"a": a}

    def observe(self, pl_module) -> dict[str, np.ndarray]:
        w = pl_module.net[0].weight.detach().double()
        for layer in list(pl_module.net)[1:]:
            w = layer.weight.detach().double() @ w
        return {"a": np.diag(self.u.T @ w @ self.v).copy()}

    def conditions(self) -> Optional[str]:
        if self.depth != 1:
            return f"the student has {self.depth} layers; the flow is exact for one"
        return None
