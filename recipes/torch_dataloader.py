"""Title: Feed a PyTorch DataLoader to Keras: NCHW to NHWC, train_on_batch, a tape loop, fit.

In short:
    # numpy_batches: tensor.detach().cpu().numpy(), then np.transpose(images, (0, 2, 3, 1))
    model.fit(numpy_batches(loader), steps_per_epoch=len(loader), epochs=...)
    for images, labels in numpy_batches(loader, epochs=1):  # NHWC numpy batches
        model.train_on_batch(images, labels)  # or a make_tape_step(...) step

Problem: The field notes load data with a PyTorch `DataLoader` (torchvision-style datasets
give channels-first NCHW tensors) and train a Keras model, which expects channels-last NHWC
arrays. Each batch has to become numpy and be transposed, and the loop that feeds
`train_on_batch` or a GradientTape step must not drop a batch or an epoch. `fit` wants a
generator, not a re-iterable object such as a DataLoader, except on Keras 3, which accepts
a DataLoader directly but does not transpose it.

Recipe:
    1. Convert each batch: `to_numpy` (`tensor.detach().cpu().numpy()` for a torch tensor)
       and `nchw_to_nhwc` (`np.transpose(batch, (0, 2, 3, 1))`, made contiguous).
    2. `numpy_batches(loader, epochs=None)` iterates the loader once per epoch and yields
       converted (images, labels) pairs: a generator `fit` takes with
       `steps_per_epoch=len(loader)`, and a plain loop can feed to `train_on_batch` or to
       `make_tape_step`'s compiled GradientTape step.
    3. On Keras 3 a DataLoader that already yields NHWC batches can go to `fit` directly.
    4. torch is optional: this module imports it behind `try/except ImportError`, and only
       `make_loader` needs it. Install the CPU build with
       `pip install torch --index-url https://download.pytorch.org/whl/cpu`.

Pitfalls:
    - `nchw_to_nhwc` moves axis 1 last: element [n, c, h, w] lands at [n, h, w, c].
    - `train_on_batch` and the tape step over `numpy_batches` of a DataLoader end one epoch
      at the weights of `fit` on the same NHWC arrays (plain SGD, shuffle=False, atol 1e-5).
    - `fit` on a re-iterable object that is neither an array, a tf.data.Dataset, a
      generator nor a Sequence raises ValueError on every stack (the messages differ, see
      Versions); `numpy_batches(loader)` trains on all of them.
    - Keras 3.15's `fit` on a DataLoader of NCHW batches raises ValueError for a
      channels-last model ("expected axis -1 of input shape to have value 3"): fit does
      not transpose.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): `fit` on a re-iterable loader raises ValueError
      "Failed to find data adapter that can handle input".
    - Keras 3 (3.0 and later): ValueError "Unrecognized data type" for such an object.
    - Keras 3.15 (measured in the `torch` tox env: TF 2.21, torch 2.13 CPU): `fit` takes a
      torch DataLoader that yields NHWC batches directly, and ends at the weights of `fit`
      on the arrays.

Sources: PyTorch docs "torch.utils.data" (DataLoader, TensorDataset); keras.io "Model
training APIs" (fit: x may be a torch DataLoader on Keras 3); keras-team/keras source
`trainers/data_adapters/__init__.py` (`get_data_adapter`, "Unrecognized data type") and
`torch_data_loader_adapter.py`; PyTorch "Get started" (CPU wheels from the PyTorch index).

See also:
    - generator_dataset: a Python generator for fit, steps_per_epoch
    - sequence_dataset: a batch dataset class fit accepts
    - port_pytorch_weights: bring the PyTorch model's weights too
    - training_apis: fit, train_on_batch and tape loops agree

Run: python -m recipes.torch_dataloader
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

try:
    import torch
except ImportError:
    torch = None

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def to_numpy(batch):
    """A numpy array from a torch tensor (detached, on the CPU) or an array-like."""
    if torch is not None and isinstance(batch, torch.Tensor):
        return batch.detach().cpu().numpy()
    if isinstance(batch, np.ndarray | numbers.Number):
        return np.asarray(batch)
    raise ValueError(f"batch must be a torch tensor or a numpy array, got {type(batch).__name__}")


def nchw_to_nhwc(batch):
    """(N, C, H, W) -> (N, H, W, C), contiguous, as Keras' channels-last layers expect."""
    batch = to_numpy(batch)
    if batch.ndim != 4:
        raise ValueError(f"batch must have rank 4 (N, C, H, W), got shape {batch.shape}")
    return np.ascontiguousarray(np.transpose(batch, (0, 2, 3, 1)))


def numpy_batches(loader, epochs=None):
    """Yields (NHWC images, labels) numpy batches from a loader of (NCHW images, labels).

    The loader is iterated anew every epoch, as a DataLoader expects; infinite unless
    `epochs` is given, so `fit(numpy_batches(loader), steps_per_epoch=len(loader))` never
    runs out of data.
    """
    if not hasattr(loader, "__iter__"):
        raise ValueError(f"loader must be iterable, got {loader!r}")
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1
    ):
        raise ValueError(f"epochs must be None or an int >= 1, got {epochs!r}")

    def generate():
        epoch = 0
        while epochs is None or epoch < epochs:
            for images, labels in loader:
                yield nchw_to_nhwc(images), to_numpy(labels)
            epoch += 1

    return generate()


def make_tape_step(model, loss_fn, optimizer):
    """A compiled GradientTape step `step(images, labels) -> loss` for numpy batches."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {model!r}")
    if not callable(loss_fn) or not hasattr(optimizer, "apply_gradients"):
        raise ValueError(
            f"loss_fn must be callable and optimizer an optimizer, got {loss_fn!r}, {optimizer!r}"
        )

    @tf.function(reduce_retracing=True)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        # No zip(strict=True): AutoGraph in TensorFlow 2.12 rejects the keyword.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
        return loss

    return step


def make_loader(images_nchw, labels, batch_size, shuffle=False, seed=0):
    """A torch DataLoader over numpy arrays, as the notes build one. Needs torch."""
    if torch is None:
        raise ImportError(
            "make_loader needs torch: pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or (batch_size < 1)
    ):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(np.asarray(images_nchw)), torch.from_numpy(np.asarray(labels))
    )
    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset, batch_size=int(batch_size), shuffle=shuffle, generator=generator
    )


def demo():
    random = np.random.default_rng(0)
    images_nchw = random.normal(size=(24, 3, 8, 8)).astype("float32")
    labels = random.normal(size=(24, 1)).astype("float32")
    if torch is not None:
        loader = make_loader(images_nchw, labels, batch_size=8)
        source = f"torch {torch.__version__} DataLoader"
    else:
        # Without torch, a list of NCHW batches stands in for the DataLoader.
        loader = [(images_nchw[i : i + 8], labels[i : i + 8]) for i in range(0, 24, 8)]
        source = "a list of NCHW numpy batches (torch is not installed)"
    model = keras.Sequential(
        [keras.Input(shape=(8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    print(f"Keras {KERAS_MAJOR}, feeding from {source}")
    for images, batch_labels in numpy_batches(loader, epochs=1):
        loss = model.train_on_batch(images, batch_labels)
        print(f"  train_on_batch on {images.shape}: loss {float(np.ravel(loss)[0]):.4f}")
    history = model.fit(
        numpy_batches(loader), steps_per_epoch=len(loader), epochs=2, shuffle=False, verbose=0
    )
    print(f"fit(numpy_batches(loader), steps_per_epoch={len(loader)}): {len(history.epoch)} epochs")


if __name__ == "__main__":
    demo()
