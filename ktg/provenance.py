"""What produced a run: the device and precision it resolved to, the software versions, the GPU and ktg's commit.

Every run's config.json records :func:`provenance` under ``"provenance"``, so a result can say what computed
it without its author's memory. Torch-free until :func:`provenance` is called, so that the run folder's records
can hold a :class:`Provenance`.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ktg
from ktg.config import TrainConfig

if TYPE_CHECKING:
    import torch

#: Seconds a ``git`` call may take before the commit is recorded as unknown.
_GIT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Provenance:
    """The resolved device and precision of a run and what computed it.

    Attributes:
        device: the device trained on (``"cuda:0"``, ``"cpu"``), ``auto`` resolved.
        precision: ``"bf16 autocast"`` or ``"fp32"`` (see :attr:`ktg.config.TrainConfig.precision`).
        channels_last: whether the nodes ran in channels-last memory format.
        gpu: the GPU's name (None off CUDA).
        torch: torch's version; ``cuda`` and ``cudnn`` the versions torch was built with and loaded (None
            where it has none).
        tf32_convolutions: whether cuDNN may compute fp32 convolutions in TF32 (torch's default on CUDA; None off
            CUDA): the papers' "fp32" on an Ampere or later GPU is that.
        ktg_version: ktg's version; ``git_commit`` the commit of the checkout ktg was imported from, and
            ``git_modified`` whether its tracked files differ from that commit (both None outside a git checkout).
        cpu_threads: the threads torch computed with on the CPU (None off the CPU, and in records written before
            it was kept): CPU kernels split their sums by thread, so a CPU run repeats bit for bit only on as many.
    """

    device: str
    precision: str
    channels_last: bool
    gpu: str | None
    torch: str
    cuda: str | None
    cudnn: str | None
    tf32_convolutions: bool | None
    ktg_version: str
    git_commit: str | None
    git_modified: bool | None
    cpu_threads: int | None = None

    @property
    def device_type(self) -> str:
        """The kind of device trained on, as ``torch.device(...).type`` says it: ``"cuda"`` for ``"cuda:0"``."""
        return self.device.split(":")[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """The provenance a :meth:`to_dict` dict describes."""
        return cls(**data)


def provenance(config: TrainConfig, device: torch.device) -> Provenance:
    """The provenance of a run of ``config`` on ``device`` in this process."""
    import torch  # only gathering needs it: the record itself is plain data

    resolved = config.resolved(device.type)
    on_cuda = device.type == "cuda"
    if on_cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    commit, modified = git_state(Path(ktg.__file__).resolve().parent.parent)
    return Provenance(
        device=str(device), precision=resolved.precision, channels_last=resolved.channels_last,
        gpu=torch.cuda.get_device_name(device) if on_cuda else None, torch=torch.__version__,
        cuda=torch.version.cuda, cudnn=None if cudnn is None else str(cudnn),
        tf32_convolutions=torch.backends.cudnn.allow_tf32 if on_cuda else None,
        ktg_version=ktg.__version__, git_commit=commit, git_modified=modified,
        cpu_threads=torch.get_num_threads() if device.type == "cpu" else None)


@functools.lru_cache(maxsize=None)
def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, tracked files modified) of the git checkout whose top folder is ``root`` (ktg's: the folder
    holding the package); (None, None) when ``root`` is not the top of a git checkout (an installed package,
    say) or git cannot tell. Read once per process and folder: the code a process runs is the code it imported.
    """

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S)

    try:
        found = git("rev-parse", "--show-toplevel", "HEAD")
        lines = found.stdout.split()
        # A package installed into a folder that some other repository holds is not that repository's code.
        if found.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != Path(root).resolve():
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no")
        return lines[1], (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None, None
