"""Title: Train a GAN's discriminator and generator in turn, on every Keras.

Problem: The Keras-GAN pattern compiles the discriminator D, sets `D.trainable = False`,
then builds and compiles `combined = Model(z, D(G(z)))` to train the generator G through a
fixed D, and keeps calling `D.train_on_batch` to train D. It relies on Keras 2's `compile()`
recording every layer's trainable state, which `fit` and `train_on_batch` restore while
they run. Keras 3 keeps no such record: its train step uses the `trainable_weights` of the
moment, so there D stops training: its loss still comes back
and the GAN runs on, with a UserWarning (once, when the step is traced) as the only sign
(Keras 3.6 and 3.7 raise instead).

Recipe:
    1. Build G and D as usual; never leave `D.trainable` set behind a compiled model.
    2. Either toggle and recompile before each phase (`train_discriminator_toggled` and
       `train_generator_toggled`: `D.trainable = True/False`, then `compile` again with the
       same optimizer instance, so its state carries over),
    3. or use `GanTrainer`: a GradientTape step per phase, each with an explicit variable
       list (D's or G's trainable weights, captured once) and its own optimizer.

Pitfalls:
    - With the Keras-GAN pattern, `combined.train_on_batch` updates G and leaves D
      bit-identical on every stack; what `D.train_on_batch` does depends on the Keras
      version (see Versions).
    - Toggle-and-recompile and `GanTrainer` both update D alone in the discriminator phase
      and G alone in the generator phase (the other model bit-identical) on every stack.
    - `GanTrainer` refuses a model whose trainable weights are empty (for example D after
      `D.trainable = False`) with a ValueError instead of training nothing.

Versions:
    - Keras 2 (2.12 and later, tf-keras included): `D.train_on_batch` still updates D after
      `D.trainable = False`, with no warning.
    - Keras 3.0 to 3.5 and 3.8 and later: `D.train_on_batch` leaves D unchanged and returns
      a loss; the only sign is a UserWarning "The model does not have any trainable weights".
    - Keras 3.6 and 3.7: compiling `combined` resets D's loss tracker, so `D.train_on_batch`
      raises AttributeError "'NoneType' object has no attribute 'update_state'"
      (keras-team/keras#20474, fixed in 3.8 by #20602). Recompiling D first avoids it.

Sources: eriklindernoren/Keras-GAN gan/gan.py (the pattern); Keras guide "Transfer learning
    & fine-tuning", section on `trainable` and `compile()`; Keras 3 `train_step` source
    (keras/src/backend/tensorflow/trainer.py: reads `self.trainable_weights`, warns when
    empty); Keras 2 `RespectCompiledTrainableState` (keras/src/engine/training_utils.py);
    keras-io example "DCGAN to generate face images" (explicit variable lists).

Run: python -m recipes.gan_trainable_toggle
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def build_generator(noise_dim=2, data_dim=2):
    return keras.Sequential(
        [
            keras.Input((noise_dim,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(data_dim),
        ],
        name="generator",
    )


def build_discriminator(data_dim=2):
    return keras.Sequential(
        [
            keras.Input((data_dim,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )


def _require_model(argument_name, value):
    if not isinstance(value, keras.Model):
        raise ValueError(f"{argument_name} must be a keras.Model, got {value!r}")


def keras_gan_pattern(generator, discriminator, learning_rate=1e-3):
    """The pattern as Keras-GAN writes it; returns `combined`. D trains on Keras 2 only."""
    _require_model("generator", generator)
    _require_model("discriminator", discriminator)
    discriminator.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy"
    )
    discriminator.trainable = False
    combined = build_combined(generator, discriminator)
    combined.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return combined


def build_combined(generator, discriminator):
    """`Model(z, D(G(z)))`, sharing G's and D's layers."""
    _require_model("generator", generator)
    _require_model("discriminator", discriminator)
    noise = keras.Input(generator.input_shape[1:])
    return keras.Model(noise, discriminator(generator(noise)), name="combined")


def _loss_of(result):
    """train_on_batch's loss as a float; some Keras 3 releases (3.3) return [loss, ...]."""
    return float(result[0] if isinstance(result, (list, tuple)) else result)


def train_discriminator_toggled(discriminator, optimizer, samples, labels):
    """D.trainable = True, recompile D, one train_on_batch. Returns the loss."""
    _require_model("discriminator", discriminator)
    discriminator.trainable = True
    discriminator.compile(optimizer=optimizer, loss="binary_crossentropy")
    return _loss_of(discriminator.train_on_batch(samples, labels))


def train_generator_toggled(discriminator, combined, optimizer, noise, labels):
    """D.trainable = False, recompile combined, one train_on_batch. Returns the loss."""
    _require_model("discriminator", discriminator)
    _require_model("combined", combined)
    discriminator.trainable = False
    combined.compile(optimizer=optimizer, loss="binary_crossentropy")
    return _loss_of(combined.train_on_batch(noise, labels))


class GanTrainer:
    """One GradientTape step per phase, each over an explicit list of variables."""

    def __init__(self, generator, discriminator, learning_rate=1e-3):
        _require_model("generator", generator)
        _require_model("discriminator", discriminator)
        self.generator, self.discriminator = generator, discriminator
        # Captured once: later changes to `trainable` cannot change what each phase trains.
        self.generator_variables = list(generator.trainable_weights)
        self.discriminator_variables = list(discriminator.trainable_weights)
        for name, variables in (
            ("generator", self.generator_variables),
            ("discriminator", self.discriminator_variables),
        ):
            if not variables:
                raise ValueError(f"{name} has no trainable weights; got {name}.trainable == False?")
        self.generator_optimizer = keras.optimizers.Adam(learning_rate)
        self.discriminator_optimizer = keras.optimizers.Adam(learning_rate)
        self.loss = keras.losses.BinaryCrossentropy()

    def discriminator_step(self, real, noise):
        fake = self.generator(noise, training=False)
        with tf.GradientTape() as tape:
            real_scores = self.discriminator(real, training=True)
            fake_scores = self.discriminator(fake, training=True)
            loss = self.loss(tf.ones_like(real_scores), real_scores) + self.loss(
                tf.zeros_like(fake_scores), fake_scores
            )
        gradients = tape.gradient(loss, self.discriminator_variables)
        self.discriminator_optimizer.apply_gradients(
            zip(gradients, self.discriminator_variables, strict=True)
        )
        return float(loss)

    def generator_step(self, noise):
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
    real = random.normal(loc=2.0, size=(16, 2)).astype("float32")
    noise = random.normal(size=(16, 2)).astype("float32")
    generator, discriminator = build_generator(), build_discriminator()
    keras_gan_pattern(generator, discriminator)
    before = [w.copy() for w in discriminator.get_weights()]
    try:
        discriminator.train_on_batch(real, np.ones((16, 1), "float32"))
    except AttributeError as error:  # Keras 3.6 and 3.7 (keras-team/keras#20474).
        print(f"Keras-GAN pattern: D.train_on_batch raised AttributeError: {error}")
    else:
        after = discriminator.get_weights()
        changed = any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        print(f"Keras-GAN pattern: D.train_on_batch updated D: {changed}")

    generator, discriminator = build_generator(), build_discriminator()
    trainer = GanTrainer(generator, discriminator)
    for step in range(3):
        d_loss = trainer.discriminator_step(real, noise)
        g_loss = trainer.generator_step(noise)
        print(f"GanTrainer step {step}: D loss {d_loss:.3f}, G loss {g_loss:.3f}")


if __name__ == "__main__":
    demo()
