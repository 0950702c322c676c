"""Title: Export a model with custom layers to SavedModel and TFLite (float32, float16, int8).

In short:
    model.export("exported")  # every stack; then from_saved_model, the route that converts right
    converter = tf.lite.TFLiteConverter.from_saved_model("exported")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # omit both lines for float32
    converter.target_spec.supported_types = [tf.float16]  # float16 weights
    tflite_model = converter.convert()
    # Keras 3: from_keras_model, tf.saved_model.save can abort ("LLVM ERROR") or give wrong outputs.
    int8_model = convert_to_tflite(model, "int8", representative_data=x_train[:100])
    outputs = run_tflite(int8_model, x)  # compare with model(x) before shipping

Problem: A detector rebuilt as Keras layers (yolov5's `models/tf.py` on its tf-android
branch) has to reach a phone: a SavedModel for serving, then a TFLite file in float32,
float16 and int8. The custom layers (a space-to-depth Reorg, a PyTorch-style average pool,
a depthwise convolution) must survive the export without their Python classes, and the
TFLite converter's entry points behave differently on each stack: some abort the whole
Python process, some return a model that fails or computes wrong numbers at run time.

Recipe:
    1. Build the model from plain layers and minimal custom layers (`Reorg`, `AvgPool2d`)
       with `get_config`; `build_model(seed)` fills every weight from a numpy generator so
       two processes build the same model.
    2. `save_saved_model(model, directory, method)` writes a SavedModel with
       `tf.saved_model.save` ("tf.saved_model.save") or `model.export` ("model.export").
       `tf.saved_model.load(directory).signatures["serving_default"]` runs it without the
       Python classes (`serve_saved_model`).
    3. `convert_to_tflite(model, quantization, representative_data, route)` converts with
       the route that works on the installed stack (`default_route()`: `model.export` then
       `TFLiteConverter.from_saved_model` on Keras 3, `from_keras_model` on Keras 2).
       "float16" stores float16 weights; "int8" is full-integer post-training quantization
       with a representative dataset (float input and output), as yolov5 does.
    4. `run_tflite(model_content, inputs, interpreter)` runs it with `tf.lite.Interpreter`
       ("tf.lite") or LiteRT's `ai_edge_litert.interpreter.Interpreter` ("litert", an
       optional extra: `pip install ai-edge-litert`); "auto" prefers LiteRT when installed.
    5. Compare every converted model with Keras before shipping it: float32 within 1e-5,
       float16 within 2e-4 and int8 within 1e-2 here (outputs up to 0.19 in magnitude).

Pitfalls:
    - `tf.saved_model.load` needs no Python class: a process that never imports `Reorg` or
      `AvgPool2d` runs the `serving_default` signature of both SavedModels
      (`tf.saved_model.save` and `model.export`), equal to Keras within 1e-6, on every
      stack; the loaded object is a plain TensorFlow trackable, not a Keras layer.
    - A converter route can abort the whole Python process: it dies of SIGABRT after
      printing "LLVM ERROR: Failed to infer result type(s)." on stderr, with no exception
      to catch. Try an unproven route in a child process.
    - Two routes convert without error and still fail at run time on Keras 3 (see Versions):
      the weights stay resource variables (READ_VARIABLE ops) that nothing initializes, so
      invoking raises or, worse, returns wrong numbers. `model.export` then
      `from_saved_model` matches Keras within 1e-5 on every stack.
    - The error grows from float32 to float16 to int8. Measured on every release line
      from Keras 2.12 to 3.15: float32 2.1e-7 (1.6e-7 on TensorFlow 2.20), float16 4.5e-5,
      int8 1.8e-3; the tests assert each below its bound (step 5) and within a factor of 3
      of these values. int8 keeps float32 inputs and outputs (quantize and dequantize
      inside) and holds int8 weights, float16 holds float16 weights.
    - Quantization shrinks this model's file (47 to 49 KB in float32): float16 to
      0.54x-0.56x and int8 to 0.39x-0.41x (0.545-0.557 and 0.399-0.406 measured on every
      release line from Keras 2.12 to 3.15). The weights shrink 2x and 4x; the
      flatbuffer's fixed part keeps the ratios above 0.5x and 0.25x.
    - `model.export("model.tflite", format="litert")` on Keras 3.0 to 3.7 raises nothing and
      writes a SavedModel directory named model.tflite: those releases ignore `format`.
    - Bad input (an unknown quantization, route or interpreter, a representative dataset of
      the wrong shape, none for int8, or one for float32/float16) is a ValueError naming the
      argument and value, raised before the converter runs.

Versions:
    - Keras 2 (2.12, 2.15, tf-keras 2.21): `from_keras_model`, `tf.saved_model.save` or
      `model.export` then `from_saved_model`, and `from_concrete_functions` all convert and
      match Keras.
    - With Keras 3, the TensorFlow release decides which routes work, not the Keras one:
      Keras 3.4.1 on TensorFlow 2.16.2 aborts like 3.3.3, and 3.3.3 on 2.17.1 converts like
      3.4.1; 3.6.0 and 3.7.0 likewise follow TensorFlow 2.17.1 and 2.18.1, and 3.11.3 and
      3.12.4 follow 2.19.1 and 2.20.0 (each Keras tested on both TensorFlows).
    - Keras 3 on TensorFlow 2.16: `from_keras_model`, `tf.saved_model.save` +
      `from_saved_model` and `from_concrete_functions` abort the process (SIGABRT, "LLVM
      ERROR"); only `model.export` + `from_saved_model` converts.
    - Keras 3 on TensorFlow 2.17: `from_keras_model` converts too; the other two still abort.
    - Keras 3 on TensorFlow 2.18 and 2.19: `tf.saved_model.save` + `from_saved_model` and
      `from_concrete_functions` convert, then `invoke()` raises RuntimeError
      "(READ_VARIABLE) failed to invoke".
    - Keras 3 on TensorFlow 2.20 and later: both convert and invoke silently, with wrong
      outputs.
    - Keras' own LiteRT export, `model.export(path, format="litert")` (an export archive, then
      `from_saved_model`, as the default route): Keras 3.13 and later write a .tflite file
      that matches Keras within 1e-5; 3.8 to 3.12 raise ValueError "Unrecognized
      format=litert"; 3.0 to 3.7 write a SavedModel directory (Pitfalls); Keras 2 and
      tf-keras raise TypeError "unexpected keyword argument 'format'". The recipe's
      `convert_to_tflite` also quantizes and works on every stack.
    - `tf.lite.Interpreter` works silently on TensorFlow 2.12 to 2.17. Its constructor warns
      UserWarning on 2.18 "Please use the LiteRT interpreter from the ai_edge_litert
      package", and from 2.19 "tf.lite.Interpreter is deprecated and is scheduled for
      deletion in TF 2.20" (it is still there and works in 2.21). LiteRT's
      `ai_edge_litert.interpreter.Interpreter` takes the same file, gives exactly the same
      outputs and warns nothing at all (ai-edge-litert 2.3.0 beside TensorFlow 2.21).

Sources: zldrobit/yolov5 tf-android branch, `models/tf.py` and its README (SavedModel,
    fp16 and int8 TFLite with a representative dataset); TensorFlow guide "Post-training
    quantization" and "tf.lite.TFLiteConverter" API docs; tensorflow/tensorflow#63987 and
    tensorflow/tensorflow#69237 (TF 2.16 "LLVM ERROR: Failed to infer result type(s)");
    keras-team/keras#19108 (Keras 3 TFLite conversion errors); tensorflow/tensorflow#102071
    (tf.lite deprecated in favour of LiteRT); LiteRT migration guide
    (ai.google.dev/edge/litert/migration); keras-team/keras#21674 (the PR that brought
    `model.export(format="litert")`) and keras-team/keras-io#2260 (its guide, for 3.13).

See also:
    - space_to_depth_reorg: the Reorg layer and loading it back into Keras
    - custom_layer_config: PyTorch's avg_pool2d with a config that loads
    - save_load_custom_objects: loading custom layers in Keras
    - port_pytorch_weights: PyTorch weights into the Keras model first

Run: python -m recipes.export_tflite
"""

import contextlib
import io
import numbers
import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf
from tensorflow import keras

try:
    from ai_edge_litert import interpreter as litert_interpreter
except ImportError:  # LiteRT is an optional extra.
    litert_interpreter = None

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
INPUT_SHAPE = (8, 8, 4)
QUANTIZATIONS = ("float32", "float16", "int8")
ROUTES = ("from_keras_model", "tf.saved_model.save", "model.export", "from_concrete_functions")
INTERPRETERS = ("auto", "tf.lite", "litert")


def _positive_int(argument_name, value, minimum=1):
    """Returns value as an int, or raises ValueError naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{argument_name}={value!r}; expected an integer >= {minimum}")
    return int(value)


def _div(size, factor):
    return None if size is None else size // factor


def _mul(size, factor):
    return None if size is None else size * factor


def _shape(*dims):
    """Keras 2's own layers (and its layer test) return a TensorShape; Keras 3 a tuple."""
    return tf.TensorShape(dims) if KERAS_MAJOR == 2 else dims


class Reorg(keras.layers.Layer):
    """YOLO's passthrough layer: `tf.nn.space_to_depth` with block_size."""

    def __init__(self, block_size=2, **kwargs):
        self.block_size = _positive_int("block_size", block_size, minimum=2)
        super().__init__(**kwargs)

    def call(self, inputs):
        return tf.nn.space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        size = self.block_size
        return _shape(batch, _div(height, size), _div(width, size), _mul(channels, size * size))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


class AvgPool2d(keras.layers.Layer):
    """PyTorch's `avg_pool2d(count_include_pad=True)`: zero padding counts in the mean."""

    def __init__(self, kernel_size=3, stride=1, padding=1, **kwargs):
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.stride = _positive_int("stride", stride)
        self.padding = _positive_int("padding", padding, minimum=0)
        super().__init__(**kwargs)

    def call(self, inputs):
        pad = self.padding
        padded = tf.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return tf.nn.avg_pool2d(padded, self.kernel_size, self.stride, "VALID")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        return _shape(batch, self._pooled(height), self._pooled(width), channels)

    def _pooled(self, size):
        if size is None:
            return None
        return (size + 2 * self.padding - self.kernel_size) // self.stride + 1

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
        }


def build_model(seed=1):
    """8x8x4 -> Conv -> DepthwiseConv -> Reorg -> AvgPool2d -> 1x1 Conv -> 4x4x32.

    Every weight comes from numpy's generator with `seed`, so the model is the same in any
    process and on any stack (Keras' initializers differ between releases).
    """
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = Reorg(2)(x)
    x = AvgPool2d(3, 1, 1)(x)
    outputs = keras.layers.Conv2D(32, 1)(x)
    model = keras.Model(inputs, outputs)
    # PyTorch's default scale: uniform in +-1/sqrt(fan_in), fan_in = all but the last axis.
    generator = np.random.default_rng(seed)
    weights = []
    for weight in model.get_weights():
        bound = 1 / np.sqrt(np.prod(weight.shape[:-1])) if weight.ndim > 1 else 0.1
        weights.append(generator.uniform(-bound, bound, weight.shape).astype("float32"))
    model.set_weights(weights)
    return model


def sample_inputs(count, seed=0):
    return np.random.default_rng(seed).normal(size=(count, *INPUT_SHAPE)).astype("float32")


def save_saved_model(model, directory, method="model.export"):
    """Writes a SavedModel with `tf.saved_model.save` or `model.export`."""
    if method == "tf.saved_model.save":
        tf.saved_model.save(model, directory)
    elif method == "model.export":
        # Keras 3 prints every endpoint of the export; the serving signature is all we use.
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(directory)
    else:
        raise ValueError(f"method={method!r}; use 'tf.saved_model.save' or 'model.export'")
    return directory


def serve_saved_model(directory, inputs):
    """Runs a SavedModel's serving_default signature: TensorFlow only, no Keras class."""
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    [input_name] = serve.structured_input_signature[1]
    [output] = serve(**{input_name: tf.constant(inputs)}).values()
    return output.numpy()


def default_route():
    """The route that converts correctly on every stack we test (see Versions)."""
    return "model.export" if KERAS_MAJOR >= 3 else "from_keras_model"


def _check_conversion_arguments(model, quantization, representative_data, route):
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}; use one of {QUANTIZATIONS}")
    if route not in ROUTES:
        raise ValueError(f"route={route!r}; use one of {ROUTES}")
    if quantization != "int8":
        if representative_data is not None:
            raise ValueError(
                f"representative_data is only used for quantization='int8', "
                f"got quantization={quantization!r}"
            )
        return None
    if representative_data is None:
        raise ValueError("representative_data=None; quantization='int8' needs samples")
    samples = np.asarray(representative_data, dtype="float32")
    expected = tuple(model.inputs[0].shape[1:])
    if samples.ndim != len(expected) + 1 or samples.shape[1:] != expected or not len(samples):
        wanted = ", ".join(map(str, expected))
        raise ValueError(f"representative_data shape={samples.shape}; expected (N, {wanted})")
    return samples


def _converter(model, route, directory):
    if route == "from_keras_model":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if route in ("tf.saved_model.save", "model.export"):
        path = save_saved_model(model, os.path.join(directory, "saved_model"), route)
        return tf.lite.TFLiteConverter.from_saved_model(path)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    function = tf.function(lambda inputs: model(inputs)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], model)


def convert_to_tflite(model, quantization="float32", representative_data=None, route=None):
    """Returns the TFLite flatbuffer (bytes) of `model`, quantized as asked."""
    route = default_route() if route is None else route
    samples = _check_conversion_arguments(model, quantization, representative_data, route)
    with tempfile.TemporaryDirectory() as directory:
        converter = _converter(model, route, directory)
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            # Builtin int8 kernels only, as yolov5's --tfl-int8; inputs and outputs stay
            # float32, so the file is a drop-in replacement for the float model.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        return converter.convert()


def make_interpreter(model_content, interpreter="auto"):
    if interpreter not in INTERPRETERS:
        raise ValueError(f"interpreter={interpreter!r}; use one of {INTERPRETERS}")
    if interpreter == "litert" or (interpreter == "auto" and litert_interpreter is not None):
        if litert_interpreter is None:
            raise ValueError("interpreter='litert' needs `pip install ai-edge-litert`")
        return litert_interpreter.Interpreter(model_content=model_content)
    if getattr(tf.lite, "Interpreter", None) is None:  # announced for removal from TF
        raise ValueError(f"interpreter={interpreter!r}: no tf.lite.Interpreter here; use 'litert'")
    return tf.lite.Interpreter(model_content=model_content)


def run_tflite(model_content, inputs, interpreter="auto"):
    """Runs a one-input, one-output TFLite model on a batch of float32 inputs."""
    runner = make_interpreter(model_content, interpreter)
    inputs = np.asarray(inputs, dtype="float32")
    input_index = runner.get_input_details()[0]["index"]
    runner.resize_tensor_input(input_index, inputs.shape)
    runner.allocate_tensors()
    runner.set_tensor(input_index, inputs)
    runner.invoke()
    return runner.get_tensor(runner.get_output_details()[0]["index"]).copy()


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    model, inputs = build_model(), sample_inputs(4)
    expected = model(inputs).numpy()
    with tempfile.TemporaryDirectory() as directory:
        served = serve_saved_model(save_saved_model(model, f"{directory}/m"), inputs)
        print(f"model.export, reloaded: max error {np.abs(served - expected).max():.1e}")
    print(f"conversion route on this stack: {default_route()}")
    sizes = {}
    for quantization in QUANTIZATIONS:
        data = sample_inputs(8, seed=1) if quantization == "int8" else None
        content = convert_to_tflite(model, quantization, data)
        sizes[quantization] = len(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            error = np.abs(run_tflite(content, inputs) - expected).max()
        ratio = sizes[quantization] / sizes["float32"]
        print(
            f"{quantization:>8}: {sizes[quantization]} bytes ({ratio:.2f}x), max error {error:.1e}"
        )
    try:
        convert_to_tflite(model, "int8", np.zeros((2, 8, 8, 3)))
    except ValueError as error:
        print(f"wrong representative data: ValueError: {error}")


if __name__ == "__main__":
    demo()
