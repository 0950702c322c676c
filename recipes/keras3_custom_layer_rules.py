"""Title: Port a Keras 2 custom layer to Keras 3: six rules, one layer that runs on every stack.

In short:
    def build(self, input_shape):  # all state here, sub-layers' too: no "unbuilt state"
        self.dense.build(input_shape)
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")  # no tf.Variable
    def call(self, inputs, max_value=1.0, mask=None):  # Keras passes `mask` on every stack
        outputs = self.dense(inputs) * self.scale  # tf.cond, not a Python `if` on a tensor:
        top = tf.reduce_max(tf.abs(outputs))
        return tf.cond(top > max_value, lambda: outputs * (max_value / top), lambda: outputs)
    def compute_output_shape(self, input_shape):  # TimeDistributed asks for it on Keras 3
        return (*input_shape[:-1], self.units)
    outputs = layer(inputs, max_value=3.0)  # a non-tensor argument goes by keyword

Problem: A custom layer written for Keras 2 (`tf.keras` up to TF 2.15, or tf-keras) runs on
Keras 3 (TF 2.16 and later) without an import error and then goes wrong in six ways. A
`tf.Variable` kept as an attribute is no longer a weight: `fit` never trains it and `.keras`
files drop it, silently. A Python `if` on a tensor in `call()` raises
`OperatorNotAllowedInGraphError: ... Using a symbolic tf.Tensor as a Python bool is not
allowed` in `fit` and in a functional model, because Keras 3 does not run `call()` through
autograph. `layer(x, 0.5)` raises "Only input tensors may be passed as positional arguments".
A layer that makes its sub-layers in `__init__` and has no `build()` draws "looks like it has
unbuilt state" warnings, and one that creates a weight in `call()` raises "You cannot add new
elements of state". `TimeDistributed` asks for `compute_output_shape`, and call arguments
named `<name>_mask` are filled in by Keras 3 where Keras 2 left them alone.

Recipe:
    1. Create every weight with `self.add_weight(...)` in `build()`, never `tf.Variable`.
    2. Branch on tensor values with `tf.cond` (or `tf.where` per element). `keras.ops.cond`
       also works on Keras 3, but Keras 2 has no `keras.ops`: `tf.cond` is the form that
       runs on all five stacks.
    3. Pass every non-tensor `call()` argument by keyword: `layer(x, max_value=0.5)`.
    4. Write a `build(self, input_shape)` that builds each sub-layer made in `__init__`
       (`self.dense.build(input_shape)`) and creates the layer's own weights. Make the
       sub-layers with `dtype=self.dtype_policy`, so mixed precision reaches them.
    5. Implement `compute_output_shape(self, input_shape)` (a `tf.TensorShape` on Keras 2,
       a tuple on Keras 3) so `TimeDistributed` and Keras 3's functional API can use it.
    6. Take a Keras mask as `call(self, inputs, ..., mask=None)` and set
       `self.supports_masking = True` when the layer passes it on. Give `build` and
       `compute_output_shape` a single `input_shape` argument, so an extra tensor argument
       such as `attention_mask=` works on every release.
    `CappedDense` does all six: a Dense layer times a trained scalar, whose batch is scaled
    down when its largest absolute output exceeds `max_value`, with masked steps set to 0.
    The tests save to a file named `m.keras` on every stack (Keras 2.12 writes legacy HDF5
    under that name, see save_paths).

Pitfalls:
    - `CappedDense` has three trainable weights (the Dense kernel and bias and `scale`) on
      every stack, one `fit` step moves `scale` by the SGD step computed in NumPy (within
      1e-6), and a `.keras` round trip restores it exactly.
    - A Python `if` on a tensor in `call()` works when the layer is called eagerly, on every
      stack. `tf.cond` in `call()` works in a functional model on every stack and takes both
      branches as NumPy does (within 1e-6).
    - Non-tensor arguments passed by keyword work on every stack.
    - A layer that makes a `Dense` in `__init__` and has no `build()`: after
      `layer.build(shape)` it has no weights on every stack, and `set_weights` raises
      ValueError "but the layer was expecting 0 weights". `CappedDense.build(shape)` creates
      all three weights, nothing warns, and `set_weights` works.
    - A model holding that layer gets its trained `Dense` weights back exactly from a
      `.keras` file, on every stack.
    - A sub-layer made in `__init__` does not take the outer layer's dtype policy: with
      `dtype="mixed_float16"` that layer returns float32 on every stack. `CappedDense` passes
      `dtype=self.dtype_policy` to its `Dense` and returns float16.
    - `TimeDistributed(CappedDense(...))` builds in a functional model and computes the
      per-timestep result (within 1e-6) on every stack.
    - A mask from `Embedding(mask_zero=True)` reaches `call(inputs, mask=None)` on every
      stack; `CappedDense` sets the masked steps to exactly 0 and passes the mask on.
    - With single-argument `build(input_shape)` and `compute_output_shape(input_shape)`, a
      layer called as `layer(x, attention_mask=m)` builds in a functional model on every
      stack, and `build` receives the shape of `x`.

Versions:
    - A `tf.Variable` attribute: Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21) lists it in
      `trainable_weights`, `fit` trains it and a `.keras` round trip restores it. Keras 3.0
      and later: it is missing from `trainable_weights`, `fit` leaves it unchanged, and
      after a `.keras` round trip it holds its initial value again, without any error.
    - A Python `if` on a tensor in `call()`: Keras 2 runs it in a functional model and in
      `fit` (autograph rewrites `call`). Keras 3 raises OperatorNotAllowedInGraphError in
      both: in `fit` "Using a symbolic `tf.Tensor` as a Python `bool` is not allowed"; in a
      functional model the same on 3.0 to 3.3, and from 3.4 a message that says "Could not
      automatically infer the output shape / dtype" and then quotes that text.
      `keras.ops` exists under `from tensorflow import keras` on Keras 3 only, and
      `keras.ops.cond` works in a functional model there.
    - A float passed positionally to `call()`: Keras 2 accepts it; Keras 3.0 and later raise
      ValueError "Only input tensors may be passed as positional arguments"
      (keras-team/keras#18676).
    - A layer without `build()` that holds an unbuilt sub-layer: Keras 3 warns (UserWarning
      "`build()` was called on layer ..., however the layer does not have a `build()` method
      implemented and it looks like it has unbuilt state") on `layer.build(shape)` and again
      when `load_model` rebuilds it from a `.keras` file; Keras 2 says nothing.
    - A weight created in `call()`: Keras 2 creates it on the first call; Keras 3 raises
      ValueError "You cannot add new elements of state (variables or sub-layers) ...".
    - `TimeDistributed` over a custom layer without `compute_output_shape`, in a functional
      model: Keras 2 builds it; Keras 3.0 to 3.4 raise NotImplementedError "Layer ... should
      implement `def compute_output_shape(self, input_shape)`", 3.5 and later
      NotImplementedError "Layer ... does not have a `compute_output_shape` method
      implemented". Over a nested `Sequential` or functional model: Keras 3.0 to 3.3 raise
      NotImplementedError "Layer Sequential (or Functional) should implement
      `def compute_output_shape(self, input_shape)`" (keras-team/keras#19792); Keras 2 and
      Keras 3.4 and later build it (keras-team/keras#19799).
    - `call(self, query, value, query_mask=None, value_mask=None)`: Keras 3 fills
      `query_mask` and `value_mask` with the Keras masks of `query` and `value`; Keras 2
      passes None. A layer that takes `mask` without `supports_masking = True` draws, on
      Keras 3 only, UserWarning "... does not support masking and will therefore destroy
      the mask information".
    - An explicit tensor argument named `attention_mask`: a two-argument
      `build(self, inputs_shape, attention_mask_shape=None)` receives its shape on Keras
      3.14 and later, None on Keras 2 and Keras 3.0 to 3.13; a two-argument
      `compute_output_shape(self, inputs_shape, attention_mask_shape)` raises TypeError
      "missing 1 required positional argument: 'attention_mask_shape'" in a functional
      model on Keras 3.0 to 3.13, and works on Keras 2 and 3.14 and later
      (keras-team/keras#22118, fixing keras-team/keras#21154).

Sources: Keras guide "Migrating Keras 2 code to multi-backend Keras 3"
    (keras.io/guides/migrating_to_keras_3: "TF autograph", "TensorFlow variables tracking",
    "State-building issues"); keras-team/keras#18467 (Keras 2 <> Keras 3 incompatibilities:
    `tf.Variable` as layer attributes); keras-team/keras#18676 (positional arguments, "This is
    deliberate"); keras-team/keras#19792 and its fix keras-team/keras#19799 (`Sequential` and
    functional models get `compute_output_shape`, Keras 3.4); keras-team/keras#21154 and its
    fix keras-team/keras#22118 (`*_mask` arguments kept in the build shapes, Keras 3.14);
    Keras API docs "The Layer class" (build, compute_output_shape, supports_masking).

See also:
    - custom_layer_config: a custom layer's get_config that saves and loads
    - save_load_custom_objects: custom layers in every file format, on every Keras
    - model_building_styles: unbuilt subclassed models and their weights
    - tensor_ops: tf ops on a keras.Input, and keras.ops on Keras 3

Run: python -m recipes.keras3_custom_layer_rules
"""

import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _positive_number(argument_name, value):
    """`value` as a float when it is a finite number > 0 (not a bool, not a tensor)."""
    valid = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
    if not valid:
        raise ValueError(
            f"{argument_name} must be a finite number > 0, got {argument_name}={value!r}"
        )
    return float(value)


class CappedDense(keras.layers.Layer):
    """Dense, times a trained scalar `scale`; a batch whose largest absolute output exceeds
    `max_value` is scaled down to it; masked steps are 0. Each rule is one line here."""

    def __init__(self, units, max_value=6.0, kernel_initializer="glorot_uniform", **kwargs):
        valid_units = isinstance(units, numbers.Integral) and not isinstance(units, bool)
        if not valid_units or units < 1:
            raise ValueError(f"units must be an int >= 1, got units={units!r}")
        max_value = _positive_number("max_value", max_value)
        if not isinstance(kernel_initializer, str):
            raise ValueError(
                "kernel_initializer must be the name of a Keras initializer, "
                f"got kernel_initializer={kernel_initializer!r}"
            )
        try:
            keras.initializers.get(kernel_initializer)
        except ValueError:
            raise ValueError(
                f"kernel_initializer={kernel_initializer!r} is not a Keras initializer"
            ) from None
        super().__init__(**kwargs)
        self.units, self.max_value = int(units), max_value
        self.kernel_initializer = kernel_initializer
        # Rule 4: a sub-layer made here has no weights until build() builds it. It does not
        # inherit this layer's dtype policy (mixed precision) unless given it.
        self.dense = keras.layers.Dense(
            self.units,
            kernel_initializer=kernel_initializer,
            dtype=self.dtype_policy,
            name="dense",
        )
        # Rule 6: this layer uses the mask and passes it on; Keras 3 warns about a layer
        # that takes `mask` without saying so.
        self.supports_masking = True

    def build(self, input_shape):
        self.dense.build(input_shape)
        # Rule 1: add_weight is tracked, trained and saved on every stack; a tf.Variable
        # attribute is none of these on Keras 3.
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")
        super().build(input_shape)

    def call(self, inputs, max_value=None, mask=None):
        # Rule 3: max_value is a Python number, so callers pass it by keyword.
        limit = self.max_value if max_value is None else _positive_number("max_value", max_value)
        outputs = self.dense(inputs) * self.scale
        # Rule 2: Keras 3 does not run call() through autograph, so a Python `if` on a
        # tensor fails in fit and in a functional model; tf.cond works everywhere.
        largest = tf.reduce_max(tf.abs(outputs))
        outputs = tf.cond(largest > limit, lambda: outputs * (limit / largest), lambda: outputs)
        # `mask is not None` tests a Python object, not a tensor's value: fine in a graph.
        if mask is not None:
            outputs = outputs * tf.cast(mask, outputs.dtype)[..., None]
        return outputs

    def compute_output_shape(self, input_shape):
        # Rule 5: TimeDistributed calls this on every stack; Keras 2 expects a TensorShape.
        shape = (*tuple(input_shape)[:-1], self.units)
        return tf.TensorShape(shape) if KERAS_MAJOR == 2 else shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "max_value": self.max_value,
                "kernel_initializer": self.kernel_initializer,
            }
        )
        return config


def capped_dense_reference(inputs, kernel, bias, scale, max_value, mask=None):
    """What `CappedDense` computes, in NumPy (float64): the tests' oracle."""
    outputs = (np.asarray(inputs, np.float64) @ kernel + bias) * scale
    largest = np.abs(outputs).max()
    if largest > max_value:
        outputs = outputs * (max_value / largest)
    if mask is not None:
        outputs = outputs * np.asarray(mask, np.float64)[..., None]
    return outputs


def demo():
    print("Keras", KERAS_MAJOR, "| keras.ops present:", hasattr(keras, "ops"))
    layer = CappedDense(2, max_value=1.0, kernel_initializer="ones")
    layer.build((None, 3))
    print("weights after build():", [tuple(weight.shape) for weight in layer.weights])
    batch = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]], "float32")
    capped = np.asarray(layer(batch), np.float64)
    print("capped batch (largest |output| = 1):", np.round(capped, 3).tolist())
    by_keyword = np.asarray(layer(batch, max_value=3.0), np.float64)
    print("max_value=3.0 by keyword:", np.round(by_keyword, 3).tolist())
    sequence = keras.Input((5, 3))
    distributed = keras.layers.TimeDistributed(CappedDense(4))(sequence)
    print("TimeDistributed output shape:", tuple(distributed.shape))
    ids = np.array([[1, 2, 0]])
    embedded = keras.layers.Embedding(4, 3, mask_zero=True)(ids)
    masked = CappedDense(2, kernel_initializer="ones")(embedded)
    print("masked step (id 0) is zero:", bool(np.all(np.asarray(masked)[0, 2] == 0)))


if __name__ == "__main__":
    demo()
