"""Tests for recipes/generator_dataset.py: the notes' two bugs, the corrected generator, fit."""

import logging
import math
import sys
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes import generator_dataset
from recipes.generator_dataset import (
    batch_generator,
    batches_as_tuples,
    epoch_plan,
    steps_per_epoch,
)

# --- A faithful copy of the notes' generator, bugs included --------------------------------


def notes_random_crop(image, crop_fraction=0.875):
    height, width = image.shape[:2]
    crop_height, crop_width = int(height * crop_fraction), int(width * crop_fraction)
    top = np.random.randint(0, height - crop_height + 1)
    left = np.random.randint(0, width - crop_width + 1)
    return image[top : top + crop_height, left : left + crop_width]


def notes_batch_generator(images, labels, batch_size):
    n = len(images)
    i = 0
    while True:
        image_data = []
        label_data = []
        for _ in range(batch_size):
            if i == 0:
                permutation = np.random.permutation(n)
                images, labels = images[permutation], labels[permutation]
            image = notes_random_crop(images[i])
            image = notes_random_crop(image)
            image_data.append(image_data)
            label_data.append(labels[i])
            i = (i + 1) % n
        yield np.array(image_data), np.array(label_data)


def identity_images(num_samples, size=3):
    """Images whose every pixel holds the sample's index, so a batch names its samples."""
    return np.broadcast_to(
        np.arange(num_samples, dtype="float32")[:, None, None, None], (num_samples, size, size, 1)
    ).copy()


REAL_NP_ARRAY = np.array


class CapturingArray:
    """Stands in for np.array inside the notes' generator and keeps the lists it is given.

    The notes' batch list contains itself; converting it for batch_size >= 2 makes numpy
    build an array of 32 (numpy 1) or 64 (numpy 2) dimensions of size batch_size, which
    ran for minutes until it was killed when we tried. So such a list is returned as it is,
    and only batch_size=1 reaches numpy. Everything else goes to the real np.array (numpy's
    own random functions call it too).
    """

    def __init__(self):
        self.lists = []

    def __call__(self, value, *args, **kwargs):
        if isinstance(value, list):
            self.lists.append(value)
            if any(entry is value for entry in value):
                return value
        return REAL_NP_ARRAY(value, *args, **kwargs)


# --- The notes' two bugs ------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [2, 5])
def test_the_notes_generator_appends_the_batch_list_to_itself(monkeypatch, batch_size, observe):
    images = identity_images(8, size=32)
    labels = np.arange(8)
    capturing = CapturingArray()
    with monkeypatch.context() as patch:
        patch.setattr(np, "array", capturing)
        next(notes_batch_generator(images, labels, batch_size))
    image_data, label_data = capturing.lists
    assert len(image_data) == batch_size
    assert all(entry is image_data for entry in image_data)
    assert not any(isinstance(entry, np.ndarray) for entry in image_data)
    assert len(label_data) == batch_size
    observe("notes generator: batch list", "holds itself batch_size times, no image")


def test_the_notes_generator_with_batch_size_1_fails_in_np_array(observe):
    images = identity_images(4, size=32)
    with pytest.raises(ValueError, match="setting an array element with a sequence"):
        next(notes_batch_generator(images, np.arange(4), 1))
    observe("notes generator, batch_size=1", "ValueError: setting an array element")


def test_the_notes_generator_crops_every_sample_twice(monkeypatch, observe):
    crops = []
    original_crop = notes_random_crop

    def recording_crop(image, crop_fraction=0.875):
        cropped = original_crop(image, crop_fraction)
        crops.append((image.shape[:2], cropped.shape[:2]))
        return cropped

    batch_size = 3
    monkeypatch.setattr(sys.modules[__name__], "notes_random_crop", recording_crop)
    with monkeypatch.context() as patch:
        patch.setattr(np, "array", CapturingArray())
        next(notes_batch_generator(identity_images(6, size=32), np.arange(6), batch_size))
    assert crops == [((32, 32), (28, 28)), ((28, 28), (24, 24))] * batch_size
    observe("notes generator: crops per sample", "2 (32x32 -> 28x28 -> 24x24)")


# --- The corrected generator --------------------------------------------------------------


@hypothesis.given(
    num_samples=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    last_batch=st.sampled_from(generator_dataset.LAST_BATCH_CHOICES),
    seed=st.integers(0, 2**32),
)
def test_every_sample_once_per_epoch_kept_or_full_distinct_batches_dropped(
    num_samples, batch_size, last_batch, seed
):
    hypothesis.assume(last_batch == "keep" or batch_size <= num_samples)
    images = identity_images(num_samples)
    labels = np.arange(num_samples, dtype="int64")
    epochs = 2
    batches = list(
        batch_generator(images, labels, batch_size, (2, 2), last_batch, seed=seed, epochs=epochs)
    )
    per_epoch = steps_per_epoch(num_samples, batch_size, last_batch)
    expected = math.ceil if last_batch == "keep" else math.floor
    assert per_epoch == expected(num_samples / batch_size)
    assert len(batches) == epochs * per_epoch
    for epoch in range(epochs):
        epoch_batches = batches[epoch * per_epoch : (epoch + 1) * per_epoch]
        seen = np.concatenate([batch_labels for _, batch_labels in epoch_batches])
        for batch_images, batch_labels in epoch_batches:
            assert batch_images.shape == (len(batch_labels), 2, 2, 1)
            assert batch_images.dtype == np.float32 and batch_labels.dtype == np.int64
            # Every pixel of a sample holds its index: images and labels stay paired.
            np.testing.assert_array_equal(batch_images[:, 0, 0, 0], batch_labels)
        if last_batch == "keep":
            assert sorted(seen) == list(range(num_samples))
        else:
            assert len(set(seen)) == len(seen) == per_epoch * batch_size
            assert all(len(batch_labels) == batch_size for _, batch_labels in epoch_batches)


def test_each_sample_is_cropped_once_at_its_planned_offset(observe):
    images = np.arange(6 * 8 * 8 * 2, dtype="float32").reshape(6, 8, 8, 2)
    batch_images, batch_labels = next(
        batch_generator(images, np.arange(6), 6, crop_size=(5, 3), seed=7)
    )
    order, tops, lefts = epoch_plan(6, (8, 8), (5, 3), seed=7, epoch=0)
    np.testing.assert_array_equal(batch_labels, order)
    for image, index, top, left in zip(batch_images, order, tops, lefts, strict=True):
        np.testing.assert_array_equal(image, images[index, top : top + 5, left : left + 3])
    assert batch_images.shape == (6, 5, 3, 2)
    observe("batch_generator: crops per sample", "1, at the epoch plan's offset")


def test_a_new_order_every_epoch_and_the_same_stream_for_the_same_seed(observe):
    images, labels = identity_images(20), np.arange(20)

    def epoch_orders(seed):
        stream = batch_generator(images, labels, 20, seed=seed, epochs=3)
        return [tuple(batch_labels) for _, batch_labels in stream]

    orders = epoch_orders(seed=3)
    assert len(set(orders)) == 3
    assert all(sorted(order) == list(range(20)) for order in orders)
    assert epoch_orders(seed=3) == orders
    assert epoch_orders(seed=4) != orders
    observe("batch_generator: order per epoch", "new each epoch, same for the same seed")


def test_preprocess_runs_on_each_cropped_sample():
    images = np.ones((5, 4, 4, 1), "float32")
    seen_shapes = []

    def double(sample):
        seen_shapes.append(sample.shape)
        return sample * 2

    batches = list(batch_generator(images, np.arange(5), 2, (3, 3), epochs=1, preprocess=double))
    assert seen_shapes == [(3, 3, 1)] * 5
    assert all(np.all(batch_images == 2) for batch_images, _ in batches)


def test_bad_arguments_raise_value_error_naming_them_before_anything_runs():
    images, labels = identity_images(10), np.arange(10)
    with pytest.raises(ValueError, match=r"last_batch must be one of .*'pad'"):
        batch_generator(images, labels, 4, last_batch="pad")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        batch_generator(images, labels, 0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got True"):
        batch_generator(images, labels, True)
    with pytest.raises(ValueError, match=r"crop_size must be .*\(3, 3\).*\(4, 2\)"):
        batch_generator(images, labels, 4, crop_size=(4, 2))
    with pytest.raises(ValueError, match="labels must have one entry per image .10.*got 9"):
        batch_generator(images, labels[:9], 4)
    with pytest.raises(ValueError, match="images must be a numpy array"):
        batch_generator(images.tolist(), labels, 4)
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        batch_generator(images, labels, 4, epochs=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        batch_generator(images, labels, 4, seed=-1)
    with pytest.raises(ValueError, match="preprocess must be None or callable, got 3"):
        batch_generator(images, labels, 4, preprocess=3)
    with pytest.raises(ValueError, match=r"batch_size=11 exceeds num_samples=10"):
        steps_per_epoch(10, 11, "drop")
    # numpy integers are accepted wherever a Python int is.
    assert steps_per_epoch(np.int64(10), np.int32(4), "drop") == 2
    assert len(next(batch_generator(images, labels, np.int64(4), seed=np.uint8(1)))[1]) == 4


# --- Feeding fit --------------------------------------------------------------------------


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def small_model():
    model = keras.Sequential(
        [keras.Input(shape=(2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def fit_and_listen(generator, **fit_arguments):
    """Fits a small model; returns (history, batches trained, warnings, tensorflow log)."""
    handler = RecordingHandler()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    counter = BatchCounter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = small_model().fit(generator, verbose=0, callbacks=[counter], **fit_arguments)
    finally:
        logger.removeHandler(handler)
    return history, counter.batches, [str(warning.message) for warning in caught], handler.messages


def test_a_finite_generator_runs_out_of_data_differently_per_stack(version_split):
    images, labels = identity_images(6), np.arange(6, dtype="float32")
    # One epoch of 3 batches, where fit asks for steps_per_epoch * epochs = 2 * 3 = 6.
    yielded = []

    def counted(generator):
        for batch in generator:
            yielded.append(batch)
            yield batch

    finite = counted(batch_generator(images, labels, 2, crop_size=(2, 2), epochs=1))
    history, batches, caught, logged = fit_and_listen(
        finite, steps_per_epoch=2, epochs=3, shuffle=False
    )
    assert len(yielded) == 3
    warned = any("Your input ran out of data" in message for message in caught)
    log_lines = [message for message in logged if "Your input ran out of data" in message]
    channel = {(True, False): "UserWarning", (False, True): "tensorflow log warning"}.get(
        (warned, bool(log_lines)), f"warning {warned}, log {bool(log_lines)}"
    )
    assert warned or log_lines, "fit said nothing about running out of data"
    version_split(
        "fit on a finite generator of 3 batches, steps_per_epoch=2, epochs=3",
        f"{channel}; {len(history.epoch)} of 3 epochs; {batches} batches trained from 3",
        {
            "keras<3": "tensorflow log warning; 2 of 3 epochs; 3 batches trained from 3",
            "keras>=3,<3.7": "UserWarning; 3 of 3 epochs; 3 batches trained from 3",
            "keras>=3.7": "UserWarning; 3 of 3 epochs; 5 batches trained from 3",
        },
    )


def test_an_infinite_generator_with_steps_per_epoch_trains_every_asked_batch(observe):
    images, labels = identity_images(6), np.arange(6, dtype="float32")
    infinite = batch_generator(images, labels, 2, crop_size=(2, 2))
    history, batches, caught, logged = fit_and_listen(
        infinite, steps_per_epoch=steps_per_epoch(6, 2), epochs=3, shuffle=False
    )
    assert len(history.epoch) == 3 and batches == 9
    assert not [message for message in caught + logged if "ran out of data" in message]
    observe("fit on an infinite generator, steps_per_epoch=3, epochs=3", "9 batches, no warning")


def test_fit_on_a_generator_with_the_default_shuffle_warns_on_keras_3_15(version_split):
    images, labels = identity_images(4), np.arange(4, dtype="float32")
    _, _, caught, _ = fit_and_listen(
        batch_generator(images, labels, 2, crop_size=(2, 2)), steps_per_epoch=2, epochs=1
    )
    shuffle_warnings = [message for message in caught if "`shuffle=True` was passed" in message]
    version_split(
        "fit on a generator with the default shuffle=True",
        "UserWarning: shuffle=True will be ignored" if shuffle_warnings else "no warning",
        {"keras<3.15": "no warning", "keras>=3.15": "UserWarning: shuffle=True will be ignored"},
    )


# --- Several inputs from a generator (keras-yolo3's data_generator) ------------------------

YOLO_BATCH, YOLO_STEPS = 4, 2


def summed_squared_errors(tensors):
    """yolo_loss's place in keras-yolo3: a loss per sample from the predictions and y_true."""
    half = len(tensors) // 2
    return tf.add_n(
        [
            tf.reduce_sum(tf.square(prediction - target), axis=-1, keepdims=True)
            for prediction, target in zip(tensors[:half], tensors[half:], strict=True)
        ]
    )


def yolo_style_model():
    """keras-yolo3's training model, small: inputs [image, *y_true], the loss computed inside
    by a Lambda layer, and a compiled loss that passes the model's output through."""
    image = keras.Input((4,), name="image")
    targets = [keras.Input((2,), name=f"y_true_{scale}") for scale in range(2)]
    features = keras.layers.Dense(4, activation="relu")(image)
    predictions = [keras.layers.Dense(2)(features) for _ in targets]
    loss = keras.layers.Lambda(summed_squared_errors, name="yolo_loss")([*predictions, *targets])
    model = keras.Model([image, *targets], loss)
    model.compile(optimizer="sgd", loss=lambda y_true, y_pred: y_pred)
    return model


def yolo_style_batches(seed=0):
    """keras-yolo3's data_generator, small: yields [image, *y_true], np.zeros(batch_size)."""
    random = np.random.default_rng(seed)
    while True:
        image = random.normal(size=(YOLO_BATCH, 4)).astype("float32")
        y_true = [random.normal(size=(YOLO_BATCH, 2)).astype("float32") for _ in range(2)]
        yield [image, *y_true], np.zeros(YOLO_BATCH)


class YoloStyleSequence(keras.utils.Sequence):
    """The same batches from a Sequence (a PyDataset on Keras 3), inputs as a list or not."""

    def __init__(self, inputs_as_tuple):
        super().__init__()
        generator = yolo_style_batches()
        self.batches = [next(generator) for _ in range(YOLO_STEPS)]
        self.inputs_as_tuple = inputs_as_tuple

    def __len__(self):
        return YOLO_STEPS

    def __getitem__(self, index):
        inputs, targets = self.batches[index]
        return (tuple(inputs) if self.inputs_as_tuple else inputs), targets


def fit_on(model, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3.15's shuffle warning, PyDataset's workers.
        if isinstance(data, keras.utils.Sequence):
            return model.fit(data, epochs=1, shuffle=False, verbose=0)
        return model.fit(data, steps_per_epoch=YOLO_STEPS, epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize("source", ["generator", "Sequence"])
def test_inputs_yielded_as_a_list_fit_on_keras_2_only(version_split, source):
    model = yolo_style_model()
    before = [weight.copy() for weight in model.get_weights()]
    data = yolo_style_batches() if source == "generator" else YoloStyleSequence(False)
    history = []
    outcome = outcome_of(
        lambda: history.append(fit_on(model, data)),
        ["`output_signature` must contain objects that are subclass of `tf.TypeSpec`"],
    )
    trained = any(
        not np.array_equal(old, new) for old, new in zip(before, model.get_weights(), strict=True)
    )
    if outcome == "works":
        assert trained and np.isfinite(history[0].history["loss"][0])
    else:
        assert not trained  # It fails before the first step.
    returns = "a generator yields" if source == "generator" else "a Sequence's __getitem__ returns"
    version_split(
        f"fit where {returns} [x1, x2, x3], y (keras-yolo3's list of inputs)",
        outcome,
        {
            "keras<3": "works",
            "keras>=3": "TypeError: `output_signature` must contain objects that are subclass "
            "of `tf.TypeSpec`",
        },
    )


def test_inputs_as_a_tuple_train_as_fit_on_the_arrays_does(observe):
    generator = yolo_style_batches()
    batches = [next(generator) for _ in range(YOLO_STEPS)]
    arrays = [
        np.concatenate(parts) for parts in zip(*(inputs for inputs, _ in batches), strict=True)
    ]
    zeros = np.zeros(YOLO_BATCH * YOLO_STEPS)
    initial = yolo_style_model().get_weights()

    def trained_weights(fit):
        model = yolo_style_model()
        model.set_weights(initial)
        fit(model)
        return model.get_weights()

    expected = trained_weights(
        lambda model: model.fit(
            arrays, zeros, batch_size=YOLO_BATCH, epochs=1, shuffle=False, verbose=0
        )
    )
    assert any(not np.array_equal(old, new) for old, new in zip(initial, expected, strict=True))
    for data in (batches_as_tuples(yolo_style_batches()), YoloStyleSequence(True)):
        got = trained_weights(lambda model, data=data: fit_on(model, data))
        for expected_weight, got_weight in zip(expected, got, strict=True):
            np.testing.assert_allclose(got_weight, expected_weight, rtol=0, atol=1e-6)
    observe(
        "fit on inputs as a tuple (batches_as_tuples, a Sequence returning tuple(inputs))",
        "trains as fit on the arrays, weights within 1e-6",
    )


def test_batches_as_tuples_makes_every_list_a_tuple_and_refuses_a_non_iterable():
    image, target = np.ones((2, 3)), np.zeros(2)
    batches = [[[image, [image, image]], target], ({"image": [image]}, target)]
    first, second = batches_as_tuples(batches)
    assert type(first) is tuple and type(first[0]) is tuple and type(first[0][1]) is tuple
    assert first[0][0] is image and first[1] is target
    assert type(second[0]["image"]) is tuple and second[0]["image"][0] is image
    with pytest.raises(ValueError, match="batches must be an iterable of batches, got 3"):
        batches_as_tuples(3)


def test_demo_prints_the_batch_shapes_and_three_epochs(demo_output):
    printed = demo_output("generator_dataset")
    assert "(16, 10, 10, 3), (16, 10, 10, 3), (16, 10, 10, 3), (2, 10, 10, 3)" in printed
    assert "steps_per_epoch=4: 3 epochs" in printed
