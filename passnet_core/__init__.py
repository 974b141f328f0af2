"""PASSNet reconstruction engine: model, MRI operators, masks, coil maps, metrics, weights I/O."""

__version__ = "0.1.0"
