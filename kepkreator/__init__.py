"""KepKreator: labelled synthetic handwriting from conditional GANs, filtered by a validator."""
from kepkreator.backend import choose_keras_backend

__version__ = "0.1.0"

# Before anything imports Keras, which reads KERAS_BACKEND once.
choose_keras_backend()
