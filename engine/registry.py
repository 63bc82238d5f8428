"""The one registry: every architecture, choice and setting, with the words the user sees.

The Model, Dataset and Hyperparameter panels, the CLI, validation messages,
Compare and the report all take their names, labels, help texts and allowed
values from here, so a label or a choice is never spelled twice. Plain data
with no imports of the engine, so the window can show it before Keras loads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """One network of the zoo, as the Model panel and the CLI present it.

    `default_input_size` is the side the base sees when the model's input
    size is 0 ("default"); 0 here means the data's own size (at least 32 for
    the pretrained bases, which keras.applications refuses smaller).
    `default_head` is the classifier the "default" head stands for; "" for
    the models trained from scratch, whose classifier is part of them.
    """

    name: str
    label: str
    description: str
    pretrained: bool
    default_input_size: int
    default_head: str


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("simcnn", "SimCNN", "The paper's small CNN with batch norm, trained from scratch.",
                     pretrained=False, default_input_size=0, default_head=""),
        Architecture("resnet50", "ResNet50",
                     "ResNet50 pretrained on ImageNet with a dense head; images upsampled to 224 by default.",
                     pretrained=True, default_input_size=224, default_head="dense1024_512"),
        Architecture("vgg16", "VGG16",
                     "VGG16 pretrained on ImageNet, frozen or fine-tuned, at the images' own size.",
                     pretrained=True, default_input_size=0, default_head="linear"),
        Architecture("mobilenetv2", "MobileNetV2",
                     "MobileNetV2 pretrained on ImageNet: small and fast, at the images' own size.",
                     pretrained=True, default_input_size=0, default_head="linear"),
        Architecture("cnn", "CNN from scratch", "A plain three-block CNN trained from scratch (the second seed's).",
                     pretrained=False, default_input_size=0, default_head=""),
    )
}

DATASET_SOURCES = {
    "cifar10": "CIFAR-10 (download through Keras)",
    "cifar10_archive": "CIFAR-10 archive on disk",
    "folder": "Image folder (a subfolder per class)",
    "cifar100": "CIFAR-100 (download through Keras)",
    "fashion_mnist": "Fashion-MNIST (download through Keras)",
}
WEIGHTS = {"imagenet": "ImageNet", "none": "none (random)", "file": "weights file"}
HEADS = {
    "default": "default for the architecture",
    "linear": "linear (softmax only)",
    "dense256": "Dense 256 + dropout",
    "dense1024_512": "Dense 1024 - 512",
}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
SCHEDULES = {"constant": "constant", "step": "step decay", "cosine": "cosine"}
AUGMENTATIONS = {"none": "none", "flip": "flip", "flip_crop": "flip and translate",
                 "flip_crop_erase": "flip, translate and erase a patch (cutout)"}
PRECISIONS = {"float32": "float32", "mixed_float16": "mixed float16", "mixed_bfloat16": "mixed bfloat16"}
TEST_TIME = {"none": "off", "flip": "on"}
DISTRIBUTIONS = {"none": "one device", "mirrored": "every local GPU (mirrored)",
                 "multiworker": "several machines (TF_CONFIG)"}


@dataclass(frozen=True)
class Setting:
    """How one setting is shown: its label, its tooltip, and the words for its values.

    `key` is the CLI's name ("training.batch_size"); `choices` maps each
    allowed value to its label for the settings that are one of a few;
    `words` names the special numbers ("auto" for 0) that the fields show
    and accept instead of the number.
    """

    key: str
    label: str
    help: str
    choices: dict[str, str] | None = None
    words: dict[int, str] | None = None


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("name", "Name", "A name for the run, shown in the run lists."),
        Setting("preset", "Preset", "A preset fills every field below; edit any of them afterwards."),

        Setting("dataset.source", "Source", "Where the images come from.", choices=DATASET_SOURCES),
        Setting("dataset.path", "Path",
                "The CIFAR-10 python archive (cifar-10-python.tar.gz) or its extracted folder, "
                "or a folder with one subfolder of images per class (optionally inside train/ and test/)."),
        Setting("dataset.train_subset", "Training images", "Use only this many training images (balanced).",
                words={0: "all"}),
        Setting("dataset.test_subset", "Test images", "Use only this many test images (balanced).",
                words={0: "all"}),
        Setting("dataset.validation_split", "Validation split",
                "Share of the training images held out for validation (0 to 0.5)."),
        Setting("dataset.image_size", "Image size",
                "Side that folder images are resized to; as files = keep the first image's size.",
                words={0: "as files"}),
        Setting("dataset.seed", "Dataset seed", "Seed for the subsets and the validation split."),

        Setting("model.architecture", "Architecture", "The network to train.",
                choices={name: a.label for name, a in ARCHITECTURES.items()}),
        Setting("model.weights", "Weights", "Start the pretrained base from these weights.", choices=WEIGHTS),
        Setting("model.weights_file", "Weights file", "A .h5 weights file for the base (no top)."),
        Setting("model.trainable_layers", "Trainable layers",
                "frozen = train only the head; N = also train the base's last N layers, batch normalization "
                "kept frozen; all = train everything, batch normalization included.",
                words={0: "frozen", -1: "all"}),
        Setting("model.input_size", "Input size",
                "Side the images are resized to inside the model; default depends on the base.",
                words={0: "default"}),
        Setting("model.head", "Head", "The classifier on top of the pretrained base.", choices=HEADS),

        Setting("training.optimizer", "Optimizer", "The optimizer that updates the weights.", choices=OPTIMIZERS),
        Setting("training.learning_rate", "Learning rate", "Step size of the optimizer, e.g. 0.01 or 1e-3."),
        Setting("training.momentum", "Momentum", "SGD momentum (0 to 0.999); Adam's beta_1 is left as is."),
        Setting("training.weight_decay", "Weight decay", "Weight decay (0 = none); decoupled for AdamW."),
        Setting("training.schedule", "Schedule", "How the learning rate changes over the epochs.",
                choices=SCHEDULES),
        Setting("training.warmup_epochs", "Warm-up epochs", "Epochs of linear warm-up (0 = none)."),
        Setting("training.step_every", "Step every", "Step decay: multiply the rate every this many epochs."),
        Setting("training.step_factor", "Step factor", "Step decay: the factor (between 0 and 1)."),
        Setting("training.batch_size", "Batch size", "Images per training step."),
        Setting("training.epochs", "Epochs", "Passes over the training data."),
        Setting("training.steps_per_epoch", "Steps per epoch",
                "Batches per epoch; auto = every batch the data gives.", words={0: "auto"}),
        Setting("training.validation_steps", "Validation steps",
                "Validation batches per epoch; all = the whole validation split. "
                "Fewer steps give a partial, noisy estimate.", words={0: "all"}),
        Setting("training.augmentation", "Augmentation", "Random changes to the training images, inside the model.",
                choices=AUGMENTATIONS),
        Setting("training.label_smoothing", "Label smoothing", "Label smoothing (0 to 0.5)."),
        Setting("training.ema", "Weight averaging",
                "Keep a moving average of the weights with this momentum (0.9 to 0.9999; 0.999 averages over "
                "about 1,000 steps) and validate and save it instead of the raw weights; off = none.",
                words={0: "off"}),
        Setting("training.tta", "Test-time flip",
                "Predict each image as the mean of the model's answers for it and its mirror image (twice the "
                "work). The run reports its accuracy with and without it; Classify uses it for the run's model. "
                "Plain Keras' predict on the saved model gives the figure without it.", choices=TEST_TIME),
        Setting("training.early_stopping", "Early stopping",
                "Stop after this many epochs without improvement; off = never.", words={0: "off"}),
        Setting("training.seed", "Seed", "Random seed for weights, shuffling and augmentation."),
        Setting("training.precision", "Precision",
                "Number format of the layers' arithmetic; mixed float16 or bfloat16 is faster on GPUs "
                "that have it, with float32 weights.", choices=PRECISIONS),
        Setting("training.distribution", "Devices",
                "Train on one device, on every local GPU at once (data parallel), or as one worker of several "
                "machines (multiworker: TensorFlow's MultiWorkerMirroredStrategy, set up by TF_CONFIG).",
                choices=DISTRIBUTIONS),
        Setting("training.steps_per_execution", "Steps per call",
                "Training steps per graph call; auto = chosen for the model and the backend.", words={0: "auto"}),
        Setting("training.feature_cache_gb", "Feature cache (GB)",
                "A frozen base's output is computed once and kept on disk when it fits in this many GB; "
                "off = compute it in every epoch.", words={0: "off"}),
    )
}


def setting(key: str) -> Setting:
    """The Setting for a CLI key such as "training.batch_size"; KeyError names an unknown key."""
    return SETTINGS[key]


def named(key: str) -> str:
    """A setting as the window shows it and as the CLI types it: "Batch size (training.batch_size)"."""
    found = SETTINGS.get(key)
    return f"{found.label} ({key})" if found else key
