"""Pick where tensors live: the GPU when there is one, otherwise the CPU."""
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """Return ``torch.device('cuda')`` when a CUDA GPU is present, else the CPU.

    ``prefer`` ("cpu" or "cuda") forces a choice; asking for "cuda" on a machine
    without one raises a clear error instead of failing later inside a kernel.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but this machine has no CUDA GPU; use 'cpu'")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
