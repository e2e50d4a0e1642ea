"""Hedgehog linear attention: the library and the reproduction pipeline of Zhang et al., ICLR 2024."""

__version__ = "0.1.0"
