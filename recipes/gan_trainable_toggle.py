"""Title: Train a GAN's discriminator and generator in turn, on every Keras.

In short:
    # Keras-GAN's code, fixed: an optimizer per model, D.trainable set before each phase.
    combined = compile_gan(generator, discriminator)  # Adam(0.0002, 0.5) for each
    for real, noise in batches:
        fake = generator.predict(noise, verbose=0)
        d_loss, d_accuracy = train_discriminator_phase(discriminator, real, fake)
        g_loss = train_generator_phase(discriminator, combined, noise)
    # Or a tape step per phase, also on D as Keras-GAN leaves it (trainable=False):
    # trainer = GanTrainer(generator, discriminator); trainer.discriminator_step(real, noise)

Problem: Keras-GAN (gan/gan.py) makes one `Adam(0.0002, 0.5)`, compiles the discriminator D
with it (`metrics=['accuracy']`), sets `D.trainable = False`, and compiles
`combined = Model(z, D(G(z)))` with the same Adam to train the generator G through a fixed D.
Each step calls `D.train_on_batch` on real and on generated samples, then
`combined.train_on_batch(noise, valid)`, and prints D's loss and `100*d_loss[1]` accuracy.
On Keras 2, compile records every layer's trainable state and training restores it, so D
trains; but D's step builds the shared Adam for D's variables alone, and
`combined.train_on_batch` raises `KeyError: 'The optimizer cannot recognize variable ...'`
(inside a StagingError on tf-keras 2.16) at every step: G never trains. Keras 3 restores no
trainable state, so D stops training (a loss still comes back; a UserWarning "The model does
not have any trainable weights", once, is the only sign), and the shared Adam raises nothing
only because D never steps with it.

Recipe:
    1. Give D and combined an optimizer each (`compile_gan`). Compile combined first, then
       D: on Keras 3.6 and 3.7 compiling combined unsets D's loss tracker (keras#20474).
    2. Set `D.trainable = True` before each D phase and `False` before each G phase, without
       compiling again (`train_discriminator_phase`, `train_generator_phase`). Keras 2 trains
       what compile recorded (`train_on_batch` restores it), so there the flag changes
       nothing. Keras 3 reads `trainable_weights` when it traces a model's train step: at
       the first call and at any retrace, such as a new batch size. Setting the flag before
       every phase makes every trace see the right one.
    3. Call `reset_metrics()` before each `train_on_batch` whose loss and accuracy you print
       (the phase functions do): Keras 3.0 to 3.14 return the mean of every call since
       compile.
    4. Or use `GanTrainer`: a GradientTape step per phase over an explicit variable list
       (D's or G's trainable weights, captured once), each phase with its own optimizer.

Pitfalls:
    - With Keras-GAN's one Adam, `combined.train_on_batch` after the D phase raises at every
      step and leaves G bit-identical on Keras 2, and updates G on Keras 3 (see Versions).
    - One optimizer instance for D and combined fails once both step with it (D trained as
      in step 2, compiled again before each phase or not): the second to step raises, with
      "The optimizer cannot recognize variable" on Keras 2 and "Unknown variable" on most
      Keras 3 releases (see Versions). `optimizer.build(G.trainable_weights +
      D.trainable_weights)`, before `D.trainable = False`, makes one instance serve both.
    - `compile_gan` with the phase functions, and `GanTrainer`, update D alone in the D phase
      and G alone in the G phase (the other model bit-identical, G's BatchNormalization
      statistics included) on every stack.
    - Compiling again before each phase, as the Keras guide says to after changing
      `trainable`, works too with an optimizer per model, but traces the train step again
      at every phase; setting `trainable` alone traces each model's train step once.
    - `train_discriminator_phase` returns the D phase's loss and accuracy as Keras-GAN
      computes them, the mean of the real and the fake batch's own values, on every stack;
      `GanTrainer.discriminator_step` returns the same two numbers within 1e-5.
    - `GanTrainer` takes a model frozen as a whole (D as Keras-GAN leaves it) and sets its
      `trainable` back to True; it refuses a model with no trainable weights even then, and
      one optimizer instance for both models, with a ValueError.

Versions:
    - Keras 2 (2.12 and later, tf-keras included): `D.train_on_batch` still updates D after
      `D.trainable = False`, with no warning.
    - One optimizer instance stepped for D's variables, then for G's (Keras-GAN's loop on
      Keras 2, or D trained as in step 2 on any Keras): Keras 2.12 to 2.15 and tf-keras
      2.17 and later raise KeyError "The optimizer cannot recognize variable"; tf-keras
      2.16 raises the same KeyError wrapped in a StagingError ("in user code: ..."), from
      TensorFlow 2.16's AutoGraph. Keras 3.0 to 3.6 and 3.13 and later raise ValueError
      "Unknown variable"; Keras 3.7 to 3.12 raise NotImplementedError "numpy() is only
      available when eager execution is enabled" instead, while writing that ValueError's
      message inside the traced step.
    - Keras 3.0 to 3.5 and 3.8 and later: `D.train_on_batch` leaves D unchanged and returns
      a loss; the only sign is a UserWarning "The model does not have any trainable weights".
    - Keras 3.6 and 3.7: compiling `combined` resets D's loss tracker, so `D.train_on_batch`
      raises AttributeError "'NoneType' object has no attribute 'update_state'"
      (keras-team/keras#20474, fixed in 3.8 by #20602). Compiling D after combined avoids it.
    - Keras 2 trains what compile recorded: D frozen after its first `train_on_batch` still
      trains, at any batch size. Keras 3 trains what the trace saw: the same batch size
      still updates D, a new batch size retraces and leaves D unchanged.
    - Keras 3.0 to 3.14: `train_on_batch` returns loss and metrics averaged over every call
      since compile, so the second of Keras-GAN's two D calls reports the mean of both
      batches; Keras 2 and Keras 3.15 and later return the batch's own.

Sources: eriklindernoren/Keras-GAN gan/gan.py (the pattern); Keras guide "Transfer learning
    & fine-tuning", section on `trainable` and `compile()`; Keras 3 source
    keras/src/backend/tensorflow/trainer.py (`train_step` reads `self.trainable_weights` and
    warns when empty; `train_on_batch` calls `reset_metrics()` from 3.15 on,
    keras-team/keras#22617); Keras 2 `RespectCompiledTrainableState`
    (keras/src/engine/training_utils.py); keras-io example "DCGAN to generate face images"
    (explicit variable lists).

See also:
    - freeze_layers: a change of trainable needs compile
    - compiled_train_step: a tf.function tape step that traces once
    - training_apis: train_on_batch's running mean, and tape loops that agree with fit
    - per_layer_learning_rates: an optimizer per group of variables (the same KeyError)

Run: python -m recipes.gan_trainable_toggle
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def keras_gan_optimizer():
    """Keras-GAN's optimizer, a new instance per call: Adam, learning rate 0.0002, beta_1 0.5."""
    return keras.optimizers.Adam(0.0002, 0.5)


def build_generator(noise_dim=2, data_dim=2):
    """Keras-GAN's generator layers, small: Dense, LeakyReLU, BatchNormalization, tanh."""
    return keras.Sequential(
        [
            keras.Input((noise_dim,)),
            keras.layers.Dense(8),
            keras.layers.LeakyReLU(0.2),
            keras.layers.BatchNormalization(momentum=0.8),
            keras.layers.Dense(data_dim, activation="tanh"),
        ],
        name="generator",
    )


def build_discriminator(data_dim=2):
    """Keras-GAN's discriminator layers, small: Dense, LeakyReLU, a sigmoid output."""
    return keras.Sequential(
        [
            keras.Input((data_dim,)),
            keras.layers.Dense(8),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )


def _require_model(argument_name, value):
    if not isinstance(value, keras.Model):
        raise ValueError(f"{argument_name} must be a keras.Model, got {value!r}")


def _optimizer_or_default(argument_name, value):
    if value is None:
        return keras_gan_optimizer()
    if not hasattr(value, "apply_gradients"):
        raise ValueError(f"{argument_name} must be None or an optimizer instance, got {value!r}")
    return value


def _require_two_optimizers(first_name, first, second_name, second):
    # An optimizer instance serves only the variables it was built for (at its first step).
    if first is second:
        raise ValueError(
            f"{first_name} and {second_name} must be two optimizer instances, got the same "
            f"{first!r} for both"
        )


def _require_batch(argument_name, value):
    if not hasattr(value, "shape") or len(value.shape) < 1 or value.shape[0] < 1:
        raise ValueError(f"{argument_name} must be an array with a batch axis, got {value!r}")


def build_combined(generator, discriminator):
    """`Model(z, D(G(z)))`, sharing G's and D's layers."""
    _require_model("generator", generator)
    _require_model("discriminator", discriminator)
    noise = keras.Input(generator.input_shape[1:])
    return keras.Model(noise, discriminator(generator(noise)), name="combined")


def keras_gan_pattern(generator, discriminator):
    """Keras-GAN's models as it compiles them, one Adam for all; returns `combined`."""
    _require_model("generator", generator)
    _require_model("discriminator", discriminator)
    optimizer = keras_gan_optimizer()
    discriminator.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    generator.compile(loss="binary_crossentropy", optimizer=optimizer)
    discriminator.trainable = False
    combined = build_combined(generator, discriminator)
    combined.compile(loss="binary_crossentropy", optimizer=optimizer)
    return combined


def compile_gan(generator, discriminator, discriminator_optimizer=None, combined_optimizer=None):
    """Keras-GAN's models with an optimizer each (default Keras-GAN's Adam); returns `combined`.

    Sets `trainable` of D as a whole: frozen while combined compiles, trainable after.
    """
    _require_model("generator", generator)
    _require_model("discriminator", discriminator)
    discriminator_optimizer = _optimizer_or_default(
        "discriminator_optimizer", discriminator_optimizer
    )
    combined_optimizer = _optimizer_or_default("combined_optimizer", combined_optimizer)
    _require_two_optimizers(
        "discriminator_optimizer", discriminator_optimizer, "combined_optimizer", combined_optimizer
    )
    # Combined first: on Keras 3.6 and 3.7 its compile unsets D's loss tracker (keras#20474).
    discriminator.trainable = False
    combined = build_combined(generator, discriminator)
    combined.compile(loss="binary_crossentropy", optimizer=combined_optimizer)
    discriminator.trainable = True
    discriminator.compile(
        loss="binary_crossentropy", optimizer=discriminator_optimizer, metrics=["accuracy"]
    )
    return combined


def _train_on_batch_logs(model, inputs, labels):
    # Keras 3.0 to 3.14 average train_on_batch's results over every call since compile.
    model.reset_metrics()
    logs = model.train_on_batch(inputs, labels, return_dict=True)
    return {name: float(value) for name, value in logs.items()}


def train_discriminator_phase(discriminator, real, fake):
    """`D.trainable = True`, then `D.train_on_batch` on real (label 1) and on fake (label 0).

    Returns (loss, accuracy), each the mean of the two batches' values, as Keras-GAN prints
    them; accuracy is None when D was compiled without `metrics=["accuracy"]`.
    """
    _require_model("discriminator", discriminator)
    _require_batch("real", real)
    _require_batch("fake", fake)
    discriminator.trainable = True
    real_logs = _train_on_batch_logs(discriminator, real, np.ones((len(real), 1), "float32"))
    fake_logs = _train_on_batch_logs(discriminator, fake, np.zeros((len(fake), 1), "float32"))
    loss = 0.5 * (real_logs["loss"] + fake_logs["loss"])
    if "accuracy" not in real_logs:
        return loss, None
    return loss, 0.5 * (real_logs["accuracy"] + fake_logs["accuracy"])


def train_generator_phase(discriminator, combined, noise):
    """`D.trainable = False`, then `combined.train_on_batch(noise, 1)`. Returns the loss."""
    _require_model("discriminator", discriminator)
    _require_model("combined", combined)
    _require_batch("noise", noise)
    discriminator.trainable = False
    return _train_on_batch_logs(combined, noise, np.ones((len(noise), 1), "float32"))["loss"]


class GanTrainer:
    """One GradientTape step per phase, each over an explicit list of variables."""

    def __init__(
        self, generator, discriminator, generator_optimizer=None, discriminator_optimizer=None
    ):
        _require_model("generator", generator)
        _require_model("discriminator", discriminator)
        self.generator_optimizer = _optimizer_or_default("generator_optimizer", generator_optimizer)
        self.discriminator_optimizer = _optimizer_or_default(
            "discriminator_optimizer", discriminator_optimizer
        )
        _require_two_optimizers(
            "generator_optimizer",
            self.generator_optimizer,
            "discriminator_optimizer",
            self.discriminator_optimizer,
        )
        self.generator, self.discriminator = generator, discriminator
        for name, model in (("generator", generator), ("discriminator", discriminator)):
            # Keras-GAN leaves D frozen for combined's sake; this trainer trains D, and a
            # frozen BatchNormalization would also run in inference mode in D's phase.
            if not model.trainable:
                model.trainable = True
            if not model.trainable_weights:
                raise ValueError(f"{name} has no trainable weights, got {model.name!r}")
        # Captured once: later changes to `trainable` cannot change what each phase trains.
        self.generator_variables = list(generator.trainable_weights)
        self.discriminator_variables = list(discriminator.trainable_weights)
        self.loss = keras.losses.BinaryCrossentropy()

    def discriminator_step(self, real, noise):
        """One update of D on real (label 1) and generated (label 0) samples.

        Returns (loss, accuracy) as Keras-GAN prints them, from D before the update: the mean
        of the real and the fake batch's cross-entropy and of their accuracy at 0.5.
        """
        fake = self.generator(noise, training=False)
        with tf.GradientTape() as tape:
            real_scores = self.discriminator(real, training=True)
            fake_scores = self.discriminator(fake, training=True)
            loss = 0.5 * (
                self.loss(tf.ones_like(real_scores), real_scores)
                + self.loss(tf.zeros_like(fake_scores), fake_scores)
            )
        gradients = tape.gradient(loss, self.discriminator_variables)
        self.discriminator_optimizer.apply_gradients(
            zip(gradients, self.discriminator_variables, strict=True)
        )
        # Keras' binary accuracy: a score above 0.5 predicts "real".
        real_accuracy = tf.reduce_mean(tf.cast(real_scores > 0.5, "float32"))
        fake_accuracy = tf.reduce_mean(tf.cast(fake_scores <= 0.5, "float32"))
        return float(loss), float(0.5 * (real_accuracy + fake_accuracy))

    def generator_step(self, noise):
        """One update of G through a fixed D; returns the loss."""
        with tf.GradientTape() as tape:
            scores = self.discriminator(self.generator(noise, training=True), training=False)
            loss = self.loss(tf.ones_like(scores), scores)
        gradients = tape.gradient(loss, self.generator_variables)
        self.generator_optimizer.apply_gradients(
            zip(gradients, self.generator_variables, strict=True)
        )
        return float(loss)


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    random = np.random.default_rng(1)
    real = np.tanh(random.normal(loc=1.0, size=(16, 2))).astype("float32")
    noise = random.normal(size=(16, 2)).astype("float32")

    generator, discriminator = build_generator(), build_discriminator()
    combined = compile_gan(generator, discriminator)
    for step in range(2):
        fake = generator.predict(noise, verbose=0)
        d_loss, d_accuracy = train_discriminator_phase(discriminator, real, fake)
        g_loss = train_generator_phase(discriminator, combined, noise)
        print(
            f"compile_gan step {step}: [D loss: {d_loss:.3f}, acc.: {100 * d_accuracy:.2f}%] "
            f"[G loss: {g_loss:.3f}]"
        )

    generator, discriminator = build_generator(), build_discriminator()
    keras_gan_pattern(generator, discriminator)  # Leaves D frozen; GanTrainer takes it so.
    trainer = GanTrainer(generator, discriminator)
    for step in range(2):
        d_loss, d_accuracy = trainer.discriminator_step(real, noise)
        g_loss = trainer.generator_step(noise)
        print(
            f"GanTrainer step {step}: [D loss: {d_loss:.3f}, acc.: {100 * d_accuracy:.2f}%] "
            f"[G loss: {g_loss:.3f}]"
        )


if __name__ == "__main__":
    demo()
