"""convattn: CNNs and attention, reproduced and checked."""

__version__ = "0.1.0"
