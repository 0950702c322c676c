"""Prints the TensorFlow and Keras this environment runs, before its tests."""

import importlib.metadata
import sys

import tensorflow as tf
from tensorflow import keras

if keras.__name__.startswith("tf_keras"):
    keras_version = importlib.metadata.version("tf-keras") + " (tf-keras)"
elif hasattr(keras, "version"):
    keras_version = keras.version()
else:
    keras_version = importlib.metadata.version("keras")
print(f"stack: python {sys.version.split()[0]}, tensorflow {tf.__version__}, keras {keras_version}")
