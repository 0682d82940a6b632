"""morphserve: a model server whose PyTorch models can be inspected and edited live, as torch.fx graphs."""

__version__ = "0.1.0"
