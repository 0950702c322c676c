"""``python -m recipes --stack``: which TensorFlow and Keras are installed, and what follows.

It reads the installed versions from the package metadata (``importlib.metadata``) and never
imports TensorFlow, so it answers in a fraction of a second, even where TensorFlow would not
load. It reports which Keras ``tf.keras`` resolves to, the nearest of the five pinned stacks
(tox.ini), and for every version-split behaviour in docs/version-boundaries.json the outcome
its known ranges predict for this stack. The range logic mirrors conftest.py's `in_range` and
`expected_outcome`, which cannot be imported here: conftest imports TensorFlow.
"""

import importlib.metadata
import json
import pathlib

try:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:  # Every TensorFlow requires packaging; without it, there is no TensorFlow.
    SpecifierSet = Version = None

BOUNDARIES = pathlib.Path(__file__).resolve().parent.parent / "docs" / "version-boundaries.json"

# The distributions that install the `tensorflow` package, the usual ones first.
TENSORFLOW_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tensorflow-macos",
    "tensorflow-intel",
    "tf-nightly",
    "tf-nightly-cpu",
)
# TensorFlow's own test (tensorflow/__init__.py and python/util/lazy_loader.py, 2.15 to 2.21):
# exactly these values, so "TRUE" or "yes" leave tf.keras on Keras 3.
LEGACY_VALUES = ("true", "True", "1")
# TensorFlow 2.12 to 2.14 never read the variable; 2.15 is the first whose lazy loader does.
FIRST_TF_READING_LEGACY = (2, 15)
FIRST_TF_WITH_KERAS_3 = (2, 16)

KERAS_2 = "Keras 2 (bundled)"
TF_KERAS = "tf-keras"
KERAS_3 = "Keras 3"

# The five pinned stacks of tox.ini: name -> (family, TensorFlow, Keras behind tf.keras).
PINNED_STACKS = {
    "tf212": (KERAS_2, "2.12.1", "2.12.0"),
    "tf215": (KERAS_2, "2.15.1", "2.15.0"),
    "tf216": (KERAS_3, "2.16.2", "3.0.5"),
    "tf221": (KERAS_3, "2.21.0", "3.15.1"),
    "tf221-legacy": (TF_KERAS, "2.21.0", "2.21.0"),
}

SUGGESTION = (
    'tox -e stack runs every test on the versions you name (README.md, "Check your own stack")'
)


def _release(version, length=3):
    """(2, 16, 0) for "2.16"; (2, 22, 0) for "2.22.0.dev20250101"."""
    release = Version(str(version)).release
    return tuple(release[:length]) + (0,) * (length - len(release[:length]))


def installed_versions(distribution_version=importlib.metadata.version):
    """{"tensorflow": (distribution, version) or None, "keras": ..., "tf-keras": ...}.

    `distribution_version` is `importlib.metadata.version` or, in tests, a fake of it.
    """

    def version_of(name):
        try:
            return distribution_version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    tensorflow = None
    for name in TENSORFLOW_DISTRIBUTIONS:
        version = version_of(name)
        if version is not None:
            tensorflow = (name, version)
            break
    return {
        "tensorflow": tensorflow,
        "keras": version_of("keras"),
        "tf-keras": version_of("tf-keras"),
    }


def resolve_tf_keras(tf_version, keras_version, tf_keras_version, legacy_setting):
    """Which Keras `tf.keras` is: (family, version, why), or (None, None, why not).

    Follows TensorFlow's lazy loader: with TF_USE_LEGACY_KERAS in "true", "True", "1" on
    TensorFlow 2.15 or later it is tf-keras (an ImportError when tf-keras is missing);
    otherwise the `keras` package, which is Keras 2 bundled with TensorFlow 2.12 to 2.15 and
    Keras 3 from TensorFlow 2.16.
    """
    legacy = legacy_setting in LEGACY_VALUES
    if legacy and _release(tf_version, 2) >= FIRST_TF_READING_LEGACY:
        if tf_keras_version is None:
            return (
                None,
                None,
                f"TF_USE_LEGACY_KERAS={legacy_setting} but tf-keras is not installed: "
                "tf.keras raises ImportError (pip install tf-keras, or unset the variable)",
            )
        why = (
            f"TF_USE_LEGACY_KERAS={legacy_setting} on TensorFlow 2.15 or later, tf-keras installed"
        )
        return TF_KERAS, tf_keras_version, why
    if keras_version is None:
        return None, None, "the keras package is not installed: tf.keras raises ImportError"
    if _release(keras_version, 1) >= (3,):
        if legacy:
            why = f"Keras 3: TensorFlow {tf_version} ignores TF_USE_LEGACY_KERAS"
        elif legacy_setting is not None:
            why = f'Keras 3: TF_USE_LEGACY_KERAS={legacy_setting} is none of "1", "true", "True"'
        else:
            why = "Keras 3: TensorFlow 2.16 and later without TF_USE_LEGACY_KERAS"
        return KERAS_3, keras_version, why
    if _release(tf_version, 2) < FIRST_TF_WITH_KERAS_3:
        why = "bundled: TensorFlow 2.12 to 2.15 depend on the matching Keras 2"
    else:
        why = "Keras 2: the keras package installed is a Keras 2"
    if legacy:
        why += f"; TensorFlow {tf_version} ignores TF_USE_LEGACY_KERAS"
    return KERAS_2, keras_version, why


def in_range(spec, keras_version, tf_version):
    """True when the stack lies in `spec`, e.g. "keras>=3,<3.15" or "keras<3 and tf>=2.16".

    Mirrors conftest.in_range; tf-keras 2.21 counts as keras 2.21.0.
    """
    versions = {"keras": Version(str(keras_version)), "tf": Version(str(tf_version))}
    for clause in spec.split(" and "):
        clause = clause.strip()
        name = clause.rstrip("<>=!~.,0123456789 ")
        if name not in versions:
            raise ValueError(f"range {spec!r}: clause {clause!r} must start with keras or tf")
        if not SpecifierSet(clause[len(name) :].replace(" ", "")).contains(versions[name]):
            return False
    return True


def predict(known, keras_version, tf_version):
    """(outcome, holding ranges): the outcome when exactly one range of `known` holds, else None.

    Mirrors conftest.expected_outcome, which raises where this returns None.
    """
    holding = [spec for spec in known if in_range(spec, keras_version, tf_version)]
    return (known[holding[0]] if len(holding) == 1 else None), holding


def nearest_pinned(family, keras_version, tf_version):
    """The pinned stack of the same Keras family with the closest Keras, then TensorFlow."""

    def gap(first, second):
        # (0, 5, 1) from 3.10.0 to 3.15.1: the major gap counts first, then the minor.
        return tuple(abs(a - b) for a, b in zip(_release(first), _release(second), strict=True))

    def distance(item):
        _, (stack_family, stack_tf, stack_keras) = item
        return (stack_family != family, gap(stack_keras, keras_version), gap(stack_tf, tf_version))

    return min(PINNED_STACKS.items(), key=distance)[0]


def swept_stack(stacks, family, keras_version, tf_version):
    """The boundary sweep's name for these versions ("k3.10"), or None if it never ran them.

    `stacks` is version-boundaries.json's list; its keras reads "2.19.0 (tf-keras)" for tf-keras.
    """
    for stack in stacks:
        release, _, marker = stack["keras"].partition(" ")
        if "tf-keras" in marker:
            stack_family = TF_KERAS
        else:
            stack_family = KERAS_3 if _release(release, 1) >= (3,) else KERAS_2
        if (stack_family, release, stack["tensorflow"]) == (family, keras_version, tf_version):
            return stack["stack"]
    return None


def build_report(versions, legacy_setting, boundaries):
    """Everything `--stack` prints, as a dict; "problem" is set when no prediction is possible.

    `boundaries` is docs/version-boundaries.json as loaded, or None when it is missing.
    """
    report = {
        "tensorflow": None,
        "tensorflow_distribution": None,
        "keras": versions["keras"],
        "tf-keras": versions["tf-keras"],
        "TF_USE_LEGACY_KERAS": legacy_setting,
        "tf.keras": None,
        "nearest_pinned": None,
        "swept_stack": None,
        "problem": None,
        "behaviours": [],
    }
    if versions["tensorflow"] is None:
        report["problem"] = (
            "TensorFlow is not installed in this Python "
            f"(none of {', '.join(TENSORFLOW_DISTRIBUTIONS)}): pip install tensorflow"
        )
        return report
    report["tensorflow_distribution"], tf_version = versions["tensorflow"]
    report["tensorflow"] = tf_version
    family, keras_version, why = resolve_tf_keras(
        tf_version, versions["keras"], versions["tf-keras"], legacy_setting
    )
    if family is None:
        report["problem"] = why
        return report
    report["tf.keras"] = {"family": family, "version": keras_version, "why": why}
    stack = nearest_pinned(family, keras_version, tf_version)
    stack_family, stack_tf, stack_keras = PINNED_STACKS[stack]
    report["nearest_pinned"] = {
        "stack": stack,
        "family": stack_family,
        "tensorflow": stack_tf,
        "keras": stack_keras,
        "same_versions": (stack_family, stack_tf, stack_keras)
        == (family, tf_version, keras_version),
    }
    if boundaries is None:
        report["problem"] = f"{BOUNDARIES} not found: predictions need a keras-recipes checkout"
        return report
    report["swept_stack"] = swept_stack(boundaries["stacks"], family, keras_version, tf_version)
    for item in boundaries["behaviours"]:
        outcome, holding = predict(item["known"], keras_version, tf_version)
        report["behaviours"].append(
            {
                "recipe": item["recipe"],
                "behaviour": item["behaviour"],
                "outcome": outcome,
                "holding": holding,
                "known": item["known"],
            }
        )
    return report


def _not_covered(item):
    known = "; ".join(f"{spec}: {outcome!r}" for spec, outcome in item["known"].items())
    if item["holding"]:
        return f"ambiguous: {len(item['holding'])} known ranges hold ({', '.join(item['holding'])})"
    return f"not covered: no known range holds (known: {known})"


def _keras_name(family, version):
    """ "Keras 3.15.1", "Keras 2.12.0" or "tf-keras 2.21.0"."""
    return f"{'tf-keras' if family == TF_KERAS else 'Keras'} {version}"


def format_report(report):
    """The report as text: a header block, then `recipe: behaviour -> outcome` lines."""
    tensorflow = "not installed"
    if report["tensorflow"] is not None:
        tensorflow = f"{report['tensorflow']} (distribution {report['tensorflow_distribution']})"
    header = {
        "TensorFlow": tensorflow,
        "keras": report["keras"] or "not installed",
        "tf-keras": report["tf-keras"] or "not installed",
        "TF_USE_LEGACY_KERAS": report["TF_USE_LEGACY_KERAS"] or "not set",
    }
    resolved = report["tf.keras"]
    if resolved:
        header["tf.keras is"] = (
            f"{_keras_name(resolved['family'], resolved['version'])} ({resolved['why']})"
        )
    nearest = report["nearest_pinned"]
    if nearest:
        closeness = "the same versions" if nearest["same_versions"] else "the closest"
        header["nearest pinned stack"] = (
            f"{nearest['stack']}: TensorFlow {nearest['tensorflow']} with "
            f"{_keras_name(nearest['family'], nearest['keras'])} ({closeness}; "
            f"tox -e {nearest['stack']})"
        )
    lines = [f"{label:21} {value}" for label, value in header.items()]
    if report["problem"]:
        lines.append(f"\nProblem: {report['problem']}")
        return "\n".join(lines)
    behaviours = report["behaviours"]
    uncovered = [item for item in behaviours if item["outcome"] is None]
    lines.append(
        f"\n{len(behaviours)} version-split behaviours (docs/version-boundaries.json): "
        f"{len(behaviours) - len(uncovered)} predicted by their known ranges, "
        f"{len(uncovered)} not covered."
    )
    if report["swept_stack"] and not nearest["same_versions"]:
        lines.append(
            f"The version-split tests ran on these versions (boundary sweep stack "
            f"{report['swept_stack']}); the rest of the suite did not."
        )
    elif not nearest["same_versions"]:
        lines.append(
            "No tests ran on these versions: between the releases they ran on, "
            "these are predictions."
        )
    lines.append("")
    for item in behaviours:
        outcome = item["outcome"] if item["outcome"] is not None else _not_covered(item)
        lines.append(f"{item['recipe']}: {item['behaviour']} -> {outcome}")
    if uncovered or not nearest["same_versions"]:
        lines.append(f"\nTo prove them: {SUGGESTION}.")
    return "\n".join(lines)


def stack_report(environ, as_json=False, distribution_version=importlib.metadata.version):
    """(text, exit status) for `python -m recipes --stack`; 1 when nothing can be predicted."""
    versions = installed_versions(distribution_version)
    boundaries = json.loads(BOUNDARIES.read_text()) if BOUNDARIES.is_file() else None
    report = build_report(versions, environ.get("TF_USE_LEGACY_KERAS"), boundaries)
    text = json.dumps(report, indent=2) if as_json else format_report(report)
    return text, 1 if report["problem"] else 0
