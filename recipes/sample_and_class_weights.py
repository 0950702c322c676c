"""Title: Sample and class weights: what the reported loss is, and a class_weight that works.

In short:
    weights = sample_weights_from_class_weight(labels, {0: 1.0, 1: 5.0}, num_classes=2)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",  # reports sum(w * loss) / number of samples
        weighted_metrics=["sparse_categorical_crossentropy"],  # sum(w * loss) / sum(w)
    )
    model.fit(x, labels, sample_weight=weights)  # instead of class_weight=

Problem: With `sample_weight` or `class_weight` in `fit`, the loss Keras prints is not the
weighted mean of the per-sample losses: it divides the weighted sum by the number of samples,
while the same function as a weighted metric divides by the sum of the weights. Four samples
weighted 1, 0, 0, 0, the first one off by 1, report loss 0.25 and weighted mse 1.0. And
`class_weight` itself behaves differently across Keras versions and inputs: a class missing
from the dict is an error on Keras 2 but weighs 1.0 on Keras 3 with arrays and is an error
again with tf.data; keys read from JSON ("0", "1") raise on Keras 2 and are silently ignored
on Keras 3 with arrays; multi-output models refuse it; sequence targets fail or get the wrong
weights.

Recipe:
    1. Turn the class weights into per-sample weights yourself:
       `sample_weights_from_class_weight(labels, class_weight, num_classes)` raises a
       ValueError naming a missing or invalid class key, and returns weights of the labels'
       shape: one per timestep for (N, T) labels; `one_hot=True` for one-hot labels.
    2. Pass them as `fit(..., sample_weight=weights)`, or as the third element of a
       tf.data dataset, `from_tensor_slices((x, labels, weights))`. For a model with several
       outputs pass one array per output: `sample_weight=[weights_a, weights_b]`.
    3. To read the weighted mean, put the loss in `weighted_metrics`. On Keras 3.7 and later,
       `reduction="mean_with_sample_weight"` makes the loss itself divide by the weight sum.
    4. Compare reported losses only between runs with the same weights: the loss printed
       scales with the mean weight.

Pitfalls:
    - In one batch, `evaluate` reports the loss as sum(w * loss) / N, N the number of
      samples, on every stack; the same loss in `weighted_metrics` reports
      sum(w * loss) / sum(w), and a metric in `metrics` ignores the weights. Four samples
      weighted 1, 0, 0, 0 whose first error is 1 give loss 0.25 and weighted mse 1.0
      (relative 1e-6).
    - `fit(..., class_weight={c: w_c})` on integer labels reports exactly the loss of
      `sample_weight=sample_weights_from_class_weight(labels, class_weight)`: sum(w * loss) / N,
      while the loss in `weighted_metrics` reports sum(w * loss) / sum(w).
    - The helper's (N, T) weights for sequence labels give the per-timestep loss
      sum(w * loss) / (N * T) on every stack: as `sample_weight` with integer (N, T) labels,
      and in a tf.data dataset `(x, one_hot_targets, weights)` with one-hot (N, T, C) ones.
    - `class_weight` on a model with several outputs raises ValueError "`class_weight` is only
      supported for Models with a single output." on every stack; one sample-weight array
      per output works, and the loss reported is the sum over outputs of sum(w * loss) / N.
    - With a tf.data dataset, a label above the largest key of `class_weight` stops `fit`
      with InvalidArgumentError "indices[...] = 2 is not in [0, 2)" (keys 0 and 1) on every
      stack here (keras-team/keras#23071; Keras 3 up to 3.15 included).
    - `sample_weights_from_class_weight` raises ValueError for a class in the labels without
      a key, for a key that is not an integer >= 0 (the string "0" included), for a key or
      label >= num_classes, and for a negative or non-finite weight, before TensorFlow runs.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): the keys of `class_weight` must be
      exactly 0 to k - 1, so JSON string keys raise ValueError "Expected `class_weight` to be
      a dict with keys from 0 to one less than the number of classes", with arrays and with
      tf.data. Keys 0 to k - 1 and a label k (a class missing at the top) stop `fit` on
      arrays too, with InvalidArgumentError "... is not in [0, 2)" (keys 0 and 1).
      `class_weight` and `sample_weight` together multiply.
    - Keras 3 (3.0 to 3.15), arrays: a class without a key weighs 1.0; string keys are
      silently ignored, so the fit is unweighted (keras-team/keras#23220); with tf.data they
      raise TypeError 'can only concatenate str (not "int") to str'. `class_weight` and
      `sample_weight` together raise ValueError "You cannot `class_weight` and
      `sample_weight` at the same time."
    - One-hot sequence targets (N, T, C) with `class_weight`: Keras 2.12 raises ValueError
      "`class_weight` not supported for 3+ dimensional targets."; Keras 2.13 and later Keras 2
      weigh each timestep by its class, as the helper's (N, T) weights do. Keras 3: arrays
      raise TypeError "... arrays can be converted to Python scalars"; a tf.data dataset
      gets the per-timestep weights.
    - Integer sequence labels (N, T) with `class_weight`: Keras 2 takes them for one-hot
      rows and weighs each sample by the class whose number is the timestep of its largest
      label, silently; Keras 3 raises ValueError "Dimensions must be equal".
    - Batches of unequal size: Keras 2 and Keras 3.2 and later report sum(w * loss) / N over
      all samples (each batch's loss weighted by its size); Keras 3.0 to 3.1 report the plain
      mean of the batch losses. The weighted metric is sum(w * loss) / sum(w) everywhere.
    - `reduction="mean_with_sample_weight"`: Keras 3.7 and later, where `evaluate` then
      reports a loss equal to the weighted metric; Keras 3.0 to 3.6 raise ValueError
      "Invalid value for argument `reduction`", Keras 2 ValueError "Invalid Reduction Key".

Sources: keras-team/keras#19740 (a weighted loss divides by the number of elements, its
    metric by the weight sum) and keras-team/keras#20410 (adds "mean_with_sample_weight");
    keras-team/keras#23220 (invalid class_weight keys silently ignored);
    keras-team/keras#23071 (tf.data class weights fail for omitted classes);
    Keras API docs "Model training APIs" (keras.io/api/models/model_training_apis: fit's
    `class_weight` and `sample_weight`) and "Losses" (keras.io/api/losses: reduction);
    TensorFlow tutorial "Classification on imbalanced data" (class weights).

See also:
    - loss_shape_pitfall: the reported loss of train_on_batch and a tape loop
    - training_apis: fit, train_on_batch and a tape loop train alike
    - multi_output_models: losses, weights and metrics per output

Run: python -m recipes.sample_and_class_weights
"""

import collections.abc
import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

# `keras.version()` exists on every Keras 3 and on no Keras 2.
KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _checked_class_weight(class_weight, num_classes):
    """{int class id: float weight}, or ValueError naming the bad key or value."""
    if not isinstance(class_weight, collections.abc.Mapping):
        raise ValueError(
            f"class_weight must be a dict {{class id: weight}}, got class_weight={class_weight!r}"
        )
    checked = {}
    for key, weight in class_weight.items():
        # bool is an Integral too, but True is a mistake, not class 1; "0" from JSON is a str.
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
            raise ValueError(
                f"class_weight keys must be integer class ids >= 0, got key {key!r} "
                f"({type(key).__name__}) in class_weight={class_weight!r}"
            )
        if num_classes is not None and key >= num_classes:
            raise ValueError(
                f"class_weight key {key!r} is not a class: num_classes={num_classes!r}, "
                f"class_weight={class_weight!r}"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, numbers.Real)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(
                f"class_weight values must be finite numbers >= 0, got {weight!r} for key "
                f"{key!r} in class_weight={class_weight!r}"
            )
        checked[int(key)] = float(weight)
    return checked


def _class_ids(labels, one_hot):
    """Integer class ids of the labels, or ValueError naming them."""
    try:
        array = np.asarray(labels)
    except Exception as error:  # noqa: BLE001 - any failure means: not an array of labels.
        raise ValueError(f"labels must be an array, got labels={labels!r}") from error
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.dtype == bool or not numeric or array.ndim == 0:
        raise ValueError(
            f"labels must be a numeric array of at least one axis, got labels={labels!r}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"labels must be finite, got labels={labels!r}")
    if one_hot:
        if array.ndim < 2 or array.shape[-1] < 2:
            raise ValueError(
                "one_hot=True needs labels with a class axis last, (N, C) or (N, T, C), "
                f"got labels of shape {array.shape}"
            )
        return np.argmax(array, axis=-1)
    if array.ndim >= 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if (array != np.round(array)).any() or (array < 0).any():
        raise ValueError(
            "labels must be integer class ids >= 0 (pass one_hot=True for one-hot rows), "
            f"got labels={labels!r}"
        )
    return array.astype(np.int64)


def sample_weights_from_class_weight(labels, class_weight, num_classes=None, one_hot=False):
    """The weight of each label's class, float32, shaped like the labels' class ids.

    labels: integer class ids, (N,), (N, 1) or (N, T), a trailing axis of size 1 dropped;
    with one_hot=True, rows with the class axis last, (N, C) or (N, T, C), read by argmax.
    class_weight: {class id: weight}; every class in the labels needs its key.
    num_classes: when given, every key and every label must be below it.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an integer >= 1, got num_classes={num_classes!r}")
    if not isinstance(one_hot, bool):
        raise ValueError(f"one_hot must be True or False, got one_hot={one_hot!r}")
    weights_by_class = _checked_class_weight(class_weight, num_classes)
    class_ids = _class_ids(labels, one_hot)
    present = sorted(int(class_id) for class_id in np.unique(class_ids))
    if num_classes is not None and present and present[-1] >= num_classes:
        raise ValueError(f"labels hold class {present[-1]}, not below num_classes={num_classes!r}")
    missing = [class_id for class_id in present if class_id not in weights_by_class]
    if missing:
        raise ValueError(
            f"class {missing[0]} appears in the labels but class_weight has no key "
            f"{missing[0]} (classes without a key: {missing}): class_weight={class_weight!r}"
        )
    table = np.zeros(max(present + list(weights_by_class) + [0]) + 1, np.float32)
    for class_id, weight in weights_by_class.items():
        table[class_id] = weight
    return table[class_ids]


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    # Dense(1) with kernel 0.5 and bias 0.25: the first sample is off by exactly 1.
    inputs = np.array([[1.5], [1.0], [3.0], [-1.0]], "float32")
    targets = np.array([[2.0], [0.0], [0.5], [1.0]], "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.set_weights([np.array([[0.5]], "float32"), np.array([0.25], "float32")])
    model.compile(loss="mse", weighted_metrics=["mse"])
    weights = np.array([1.0, 0.0, 0.0, 0.0], "float32")
    loss, weighted_mse = model.evaluate(inputs, targets, sample_weight=weights, verbose=0)
    print(f"sample weights {weights.tolist()}: loss {loss:g}, weighted mse {weighted_mse:g}")

    labels = np.array([0, 1, 1, 2])
    print(
        "weights for labels",
        labels.tolist(),
        sample_weights_from_class_weight(labels, {0: 1.0, 1: 3.0, 2: 0.5}).tolist(),
    )
    for class_weight in ({0: 1.0, 1: 3.0}, {"0": 1.0, "1": 3.0, "2": 0.5}):
        try:
            sample_weights_from_class_weight(labels, class_weight)
        except ValueError as error:
            print(f"class_weight={class_weight}: ValueError: {error}")


if __name__ == "__main__":
    demo()
