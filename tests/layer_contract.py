"""One contract for custom layers, after keras' own `run_layer_test`.

`check_layer_contract` asserts, for one layer configuration and one input batch, that the
layer computes `expected` eagerly and inside Functional, Sequential and subclassed models,
that its output shape matches `compute_output_shape`, that its config round-trips, and that
a model holding it saves and loads (`.keras` and legacy `.h5`, inside
`keras.utils.custom_object_scope`) to identical predictions.
"""

import numpy as np
from tensorflow import keras


class SingleLayerModel(keras.Model):
    """The smallest subclassed model: one layer, called in `call`."""

    def __init__(self, layer):
        super().__init__()
        self.inner = layer

    def call(self, inputs):
        return self.inner(inputs)


def check_layer_contract(layer_class, kwargs, inputs, expected, tmp_path, atol=0.0):
    custom_objects = {layer_class.__name__: layer_class}
    layer = layer_class(**kwargs)
    eager = np.asarray(layer(inputs))
    np.testing.assert_allclose(eager, expected, atol=atol, rtol=0)
    assert tuple(layer.compute_output_shape(inputs.shape)) == expected.shape

    config = layer.get_config()
    assert layer_class.from_config(config).get_config() == config

    symbolic = keras.Input(inputs.shape[1:])
    functional = keras.Model(symbolic, layer_class(**kwargs)(symbolic))
    sequential = keras.Sequential([keras.Input(inputs.shape[1:]), layer_class(**kwargs)])
    subclassed = SingleLayerModel(layer_class(**kwargs))
    for model in (functional, sequential, subclassed):
        predicted = model.predict(inputs, verbose=0)
        np.testing.assert_allclose(predicted, expected, atol=atol, rtol=0)

    for model, filename in [
        (functional, "functional.keras"),
        (sequential, "sequential.keras"),
        (functional, "functional.h5"),
    ]:
        path = str(tmp_path / filename)
        model.save(path)
        # Keras 3.0 ignores `custom_objects` for legacy .h5 files; a scope works everywhere.
        with keras.utils.custom_object_scope(custom_objects):
            loaded = keras.models.load_model(path)
        assert isinstance(loaded.layers[-1], layer_class)
        assert loaded.layers[-1].get_config() == model.layers[-1].get_config()
        np.testing.assert_array_equal(
            loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0)
        )
    return functional
