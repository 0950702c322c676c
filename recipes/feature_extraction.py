"""Title: Intermediate layer outputs and Grad-CAM, from every kind of Keras model.

In short:
    grad_model = feature_model(model, "conv", include_output=True)  # inputs -> [conv map, scores]
    heatmaps = grad_cam(grad_model, images, class_index=1)  # (N, H, W), pooled per image
    heatmaps = normalize_heatmaps(heatmaps)  # each to [0, 1]; an all-zero map stays 0, not NaN
    # Keras 3 Sequential: model.input / model.output raise "has never been called", even after
    # build() or a call; feature_model reads model.inputs[0] and model.outputs[0] instead.
    nested = nested_feature_model(model, "trunk", "conv")  # not Model(model.inputs, inner.output)
    heatmaps = grad_cam(lambda x: subclassed(x, return_features=True), images, 1)  # no graph
    shape = layer_output_shape(layer)  # layer.output_shape is gone on Keras 3

Problem: Grad-CAM, feature visualisation and feature reuse all start with a model that stops
at an inner layer: `keras.Model(model.inputs, [model.get_layer(name).output, model.output])`.
That line, copied from the keras-io Grad-CAM example and older answers, breaks in four ways
on Keras 3. A Sequential model's `model.output` raises "The layer sequential has never been
called and thus has no defined output." even after `build()` or a call on data
(keras-team/keras#20116, keras-team/keras-io#1903; keras-team/keras#20339 after `fit`).
`layer.output_shape` is gone: "'Conv2D' object has no attribute 'output_shape'". A layer
inside a nested pretrained trunk cannot be reached from the outer model's inputs: "Graph
disconnected" on Keras 2, a KeyError at call time on Keras 3.0 to 3.13, "Output with path `0`
is not connected to `inputs`" on 3.14 and later. And a subclassed model has no graph to cut.

Recipe:
    1. `feature_model(model, names, include_output=False)`: a Functional model from
       `model.inputs[0]` to the named layers' outputs (and the model's own output). It works for
       Functional models and for Sequential models that start with `keras.Input` (or were built).
    2. `grad_cam(features_and_scores, images, class_index)`: one forward pass under a
       GradientTape gives the feature map A and the class score S; the channel weights are the
       gradients dS/dA averaged over the map's positions, per image; the heatmap is
       ReLU(sum_k weight_k * A_k). `normalize_heatmaps` scales each map to [0, 1].
    3. A layer inside a nested Functional trunk: `nested_feature_model(model, trunk_name,
       layer_name)` builds a two-output copy of the trunk (same layers, same weights) and replays
       the outer model's layers around it, for a model whose layers form a chain.
    4. A subclassed model: return the feature map from `call` (`return_features=True` in
       `ConvClassifier`) and pass `lambda x: model(x, return_features=True)` to `grad_cam`.
    5. Shapes: `layer_output_shape(layer)` is `tuple(layer.output.shape)`, on every Keras.

Pitfalls:
    - Keras 3 Sequential models answer `model.inputs` and `model.outputs` (lists) once they
      start with `keras.Input` or `input_shape=`, or were built, but never `model.input` or
      `model.output`; `model.inputs[0]` with `model.outputs[0]` or `model.layers[-1].output`
      give the same scores as the model, exactly.
    - Grad-CAM's gradient is exactly what the closed form gives: for an H x W conv map A ->
      ReLU -> global average pooling -> Dense kernel V, dS_c/dA[i, j, k] = V[k, c] / (H * W)
      where A > 0 and 0 elsewhere (tested on a 4 x 4 map); the heatmaps equal numpy's within
      1e-5.
    - Pooling the gradients over axis (0, 1, 2), as the keras-io example does for its one image,
      gives every image of a batch the batch-mean channel weights; `grad_cam` pools over
      (1, 2), so each image's heatmap is the one it gets alone, within 1e-6.
    - The map and the score must come from one forward pass: a score from a second call of the
      model does not depend on the map tensor, the gradient is None, and `grad_cam` raises
      ValueError.
    - keras-io's `tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)` gives NaN everywhere
      for a map of zeros (a dead ReLU layer); `normalize_heatmaps` leaves it at 0.
    - The trunk's own layers are not layers of the outer model: `model.get_layer("conv")`
      raises ValueError "No such layer"; use `model.get_layer("trunk").get_layer("conv")`.
      `nested_feature_model` gives the outer model's output and the inner map exactly as
      the outer model and the trunk's conv layer compute them.
    - A Sequential model without `keras.Input` that was never built or called has no graph:
      `feature_model` raises ValueError (for Keras' own errors see Versions).
    - A subclassed model has no `inputs` to start from and its layers no `output`:
      `feature_model` raises ValueError.

Versions:
    - `model.input` / `model.output` of a Sequential model: Keras 2 (2.12 to 2.15, tf-keras
      2.16 to 2.21) answers them when the model starts with `keras.Input` or `input_shape=`, or
      after `build()` or a call; before that, AttributeError "'Sequential' object has no
      attribute '_nested_outputs'". Keras 3.0 to 3.5 raise ValueError "The layer sequential has
      never been called and thus has no defined output." for every form, built, called or not;
      3.6 and later raise the same text as AttributeError.
    - `keras.Model(model.inputs, model.get_layer("conv").output)` of a Sequential model without
      `keras.Input`, never built: Keras 2 raises AttributeError "Layer conv has no inbound
      nodes"; Keras 3.0 to 3.5 ValueError "Sequential model 'sequential' has no defined inputs
      yet", 3.6 and later the same text as AttributeError.
    - `keras.Sequential([trunk_model, Dense(...)])` without `keras.Input`: Keras 3.0 to 3.4
      leave it unbuilt (`model.inputs` raises ValueError "has no defined inputs yet") until
      `build()` or a call; Keras 2 and Keras 3.5 and later build it from the trunk's input.
    - `layer.output_shape`: a tuple such as (None, 4, 4, 2) on Keras 2; AttributeError "'Conv2D'
      object has no attribute 'output_shape'" on Keras 3.0 and later.
    - Calling `keras.Model(model.inputs, outputs)` on one array: silent on Keras 2 and Keras 3.0
      to 3.5; 3.6 and later warn "UserWarning: The structure of `inputs` doesn't match the
      expected structure". `keras.Model([model.inputs], outputs)` (a list in a list, as in
      keras-team/keras#20116): Keras 3.0 to 3.3 raise ValueError "all values in the list/tuple
      must be KerasTensors"; 3.4 and 3.5 accept it silently, 3.6 and later with the same warning.
      `keras.Model(model.inputs[0], outputs)` is silent everywhere.
    - `keras.Model(outer.inputs, [inner_layer.output, outer.output])` with the layer inside a
      nested trunk: Keras 2 raises ValueError "Graph disconnected" when the model is built;
      Keras 3.0 to 3.13 build it and raise KeyError when it is called; 3.14 and later raise
      ValueError "Output with path `0` is not connected to `inputs`" when it is built.
    - A subclassed model's `model.inputs` is None on Keras 2 and an AttributeError on Keras 3;
      a layer's `.output` inside it raises AttributeError "Layer conv has no inbound nodes" on
      Keras 2, ValueError "The layer conv has never been called and thus has no defined output."
      on Keras 3.0 to 3.5, and the same text as AttributeError on 3.6 and later.

Sources: keras-io example "Grad-CAM class activation visualization" (fchollet,
    examples/vision/grad_cam.py); Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization" (ICCV 2017); keras-team/keras#20116 and
    tensorflow/tensorflow#72915 (Sequential `model.output` "has never been called" in Grad-CAM
    code); keras-team/keras-io#1903 (the Grad-CAM example fails for Sequential models);
    keras-team/keras#20339 (`model.input` of a Sequential after fit); keras-team/keras#20170
    (Keras 3.6: the structure warning); tensorflow/tensorflow#34977 and #44608 (outputs of a
    nested model's layer, Graph disconnected); Keras FAQ "How can I obtain the output of an
    intermediate layer (feature extraction)?".

See also:
    - model_building_styles: Functional, Sequential and subclassed models side by side
    - branch_finetune: a pretrained trunk with a new branch
    - freeze_layers: reach and freeze the layers nested inside a model
    - copy_weights: reuse a trunk's weights in another model

Run: python -m recipes.feature_extraction
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras


def _require_model(name, value):
    if not isinstance(value, keras.Model):
        raise ValueError(f"{name} must be a keras Model, got {value!r}")


def _layer_names(model):
    return [layer.name for layer in model.layers]


def _single_input(model):
    """`model.inputs[0]`: unlike `model.input`, it exists on Keras 3 Sequential models too."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        # Keras 3: a Sequential model without a graph yet, or a subclassed model.
        inputs = None
    if not inputs:
        kind = type(model).__name__
        raise ValueError(
            f"model {model.name!r} ({kind}) has no input tensors to start from: start a "
            "Sequential model with keras.Input(shape) or call model.build((None, ...)) first; a "
            "subclassed model has no graph, so return the features from its call()"
        )
    if len(inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(inputs)} inputs; this recipe takes one")
    # A single tensor, not the list: calling the new model on one array then matches its
    # structure (Keras 3.6 and later warn about a one-element list).
    return inputs[0]


def feature_model(model, layer_names, include_output=False):
    """A Functional model from `model`'s input to the outputs of the named layers.

    `layer_names` is one name or a list of names; with `include_output=True` the model's own
    output comes last (the two outputs Grad-CAM needs). One output is returned as a tensor,
    several as a list.
    """
    _require_model("model", model)
    names = [layer_names] if isinstance(layer_names, str) else layer_names
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"layer_names must be a name or a non-empty list, got {layer_names!r}")
    known = _layer_names(model)
    for name in names:
        if name not in known:
            raise ValueError(f"layer_names: no layer {name!r} in {model.name!r}; it has {known}")
    inputs = _single_input(model)
    outputs = [model.get_layer(name).output for name in names]
    if include_output:
        outputs.append(model.outputs[0])
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs)


def nested_feature_model(model, trunk_name, layer_name):
    """inputs -> [output of `layer_name` inside the trunk, `model`'s output], same weights.

    The trunk is a Functional model used as a layer of `model`. Its inner layers were called
    on the trunk's own input, so their outputs are not connected to `model.inputs`. A copy of
    the trunk with two outputs (built from the same layers) is connected into a new graph, and
    the outer model's other layers are called after it in order: `model`'s layers must form
    a chain (input -> ... -> trunk -> ... -> output), as in fine-tuning models.
    """
    _require_model("model", model)
    if trunk_name not in _layer_names(model):
        raise ValueError(f"trunk_name: no layer {trunk_name!r} in {model.name!r}")
    trunk = model.get_layer(trunk_name)
    if not isinstance(trunk, keras.Model):
        raise ValueError(f"trunk_name: {trunk_name!r} is a {type(trunk).__name__}, not a model")
    if layer_name not in _layer_names(trunk):
        raise ValueError(f"layer_name: no layer {layer_name!r} in trunk {trunk_name!r}")
    two_outputs = feature_model(trunk, layer_name, include_output=True)
    original_input = _single_input(model)
    inputs = keras.Input(shape=tuple(original_input.shape[1:]), dtype=original_input.dtype)
    features, outputs = None, inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer is trunk:
            features, outputs = two_outputs(outputs)
        else:
            outputs = layer(outputs)
    return keras.Model(inputs, [features, outputs])


def layer_output_shape(layer):
    """`layer.output_shape` on every Keras: the shape of the layer's (first) output, a tuple."""
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(f"layer must be a keras Layer, got {layer!r}")
    # Keras 2 gives a TensorShape, Keras 3 a tuple; tuple() of either is (None, 4, 4, 2).
    return tuple(layer.output.shape)


def _check_grad_cam_arguments(features_and_scores, images, class_index):
    if not callable(features_and_scores):
        raise ValueError(f"features_and_scores must be callable, got {features_and_scores!r}")
    if len(getattr(images, "shape", np.shape(images))) != 4:
        raise ValueError(f"images must be a batch (N, H, W, C), got shape {np.shape(images)!r}")
    if isinstance(class_index, bool) or not isinstance(class_index, numbers.Integral):
        raise ValueError(f"class_index must be an int, got {class_index!r}")
    if class_index < 0:
        raise ValueError(f"class_index must be >= 0, got {class_index!r}")


def class_score_gradients(features_and_scores, images, class_index):
    """(feature map A, dS/dA) for the score S of class `class_index`, both (N, H, W, K) numpy.

    `features_and_scores(images)` must return (feature map, class scores) from ONE forward
    pass: a two-output model from `feature_model(..., include_output=True)`, or a subclassed
    model's call that returns both.
    """
    _check_grad_cam_arguments(features_and_scores, images, class_index)
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        result = features_and_scores(images)
        if not isinstance(result, (list, tuple)) or len(result) != 2:
            raise ValueError(
                "features_and_scores must return (feature_map, scores), got "
                f"{type(result).__name__}"
            )
        feature_map, scores = result
        if class_index >= scores.shape[-1]:
            raise ValueError(f"class_index={class_index} but there are {scores.shape[-1]} classes")
        class_score = scores[:, class_index]
    # Each image's score depends on its own map only, so the gradient of the batch's summed
    # score is every image's own gradient.
    gradients = tape.gradient(class_score, feature_map)
    if gradients is None:
        raise ValueError(
            "features_and_scores: the class score does not depend on the feature map; compute "
            "both in one forward pass (one two-output model), not with two calls"
        )
    return np.asarray(feature_map), np.asarray(gradients)


def grad_cam(features_and_scores, images, class_index):
    """Grad-CAM heatmaps (N, H, W) of the feature map for class `class_index`, not normalized.

    Channel weights are the gradients averaged over the map's positions of each image (not over
    the batch); the heatmap is ReLU(sum over channels of weight * map).
    """
    feature_map, gradients = class_score_gradients(features_and_scores, images, class_index)
    channel_weights = gradients.mean(axis=(1, 2))  # (N, K)
    heatmaps = np.einsum("nhwk,nk->nhw", feature_map, channel_weights)
    return np.maximum(heatmaps, 0.0)


def normalize_heatmaps(heatmaps):
    """Each heatmap of (N, H, W) divided by its maximum, so it spans [0, 1]; zeros stay zeros."""
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must have shape (N, H, W), got shape {heatmaps.shape!r}")
    if not np.all(np.isfinite(heatmaps)) or np.any(heatmaps < 0):
        raise ValueError("heatmaps must be finite and >= 0 (grad_cam's output)")
    peaks = heatmaps.max(axis=(1, 2), keepdims=True)
    # Dividing a map of zeros by its maximum (0) is what makes keras-io's formula give NaN.
    return np.divide(heatmaps, peaks, out=np.zeros_like(heatmaps), where=peaks > 0)


class ConvClassifier(keras.Model):
    """Conv2D -> ReLU -> global average pooling -> Dense, subclassed.

    `call(images, return_features=True)` returns (conv map, class scores): the feature route
    for a model that has no graph to cut.
    """

    def __init__(self, filters=2, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, name="conv")
        self.relu = keras.layers.ReLU(name="relu")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(classes, name="head")

    def call(self, inputs, return_features=False):
        feature_map = self.conv(inputs)
        scores = self.head(self.pool(self.relu(feature_map)))
        return (feature_map, scores) if return_features else scores


def demo():
    images = np.random.default_rng(0).normal(size=(2, 6, 6, 1)).astype("float32")
    inputs = keras.Input((6, 6, 1))
    conv_map = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(conv_map))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))
    grad_model = feature_model(model, "conv", include_output=True)
    print("conv output shape:", layer_output_shape(model.get_layer("conv")))
    heatmaps = grad_cam(grad_model, images, class_index=1)
    print("Grad-CAM heatmaps:", heatmaps.shape)
    print(np.round(normalize_heatmaps(heatmaps)[0], 2))
    sequential = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3)])
    try:
        print("Sequential model.output:", sequential.output.shape)
    except (AttributeError, ValueError) as error:
        print(f"Sequential model.output: {type(error).__name__}: {error}")
    print("Sequential model.outputs[0]:", tuple(sequential.outputs[0].shape))


if __name__ == "__main__":
    demo()
