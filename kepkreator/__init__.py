"""KepKreator: labelled synthetic handwriting from conditional GANs, filtered by a validator."""
__version__ = "0.1.0"
