"""One module per algorithm: pure loss functions, a validated Config, and ``train(...) -> History``."""
