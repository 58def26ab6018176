"""Fast kernels, opt-in and tested against pure PyTorch references."""
