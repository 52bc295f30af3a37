"""Config loading: defaults, round trip, and one exact error line per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmal.config import TrainConfig, config_from_dict, dump_config, load_config
from mmal.errors import ConfigError

UCI = """
[dataset]
kind = "uci-mfeat"
views = ["fac", "fou"]

[modalities.strong]
kind = "vector"
encoder = "mlp"

[modalities.weak]
kind = "vector"
encoder = "mlp"
dim = 32
"""

MANIFEST = """
[dataset]
kind = "manifest"
root = "data"

[modalities.image]
kind = "image"
encoder = "resnet50"
image_size = 64

[modalities.text]
kind = "text"
encoder = "bert"
pretrained = "bert-base-uncased"

[model]
fusion = "sum"
fused_dim = 128
dropout = 0.2

[train]
epochs = 3
lr = 0.01

[al]
initial_budget = 500
budget = 250
seed = 7
"""


AV = """
[dataset]
kind = "manifest"
root = "data"

[modalities.clip]
kind = "video"
encoder = "r2plus1d_18"

[modalities.sound]
kind = "audio"
encoder = "audio-resnet18"

[model]
fusion = "nl-gate"
"""


def _write(tmp_path: Path, text: str, name: str = "mmal.toml") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_fill_every_optional_key(tmp_path):
    config = load_config(_write(tmp_path, UCI))
    assert config.modality_names == ["strong", "weak"]
    assert config.dataset.kind == "uci-mfeat" and config.dataset.root is None
    assert config.dataset.options == {"views": ("fac", "fou"), "test_fraction": 0.2,
                                      "standardize": True}
    assert config.model.fusion == "concat" and config.model.dropout == 0.0
    assert (config.train.epochs, config.train.batch_size, config.train.optimizer) == (10, 32, "adamw")
    assert (config.al.initial_budget, config.al.budget, config.al.seed) == (100, 50, 0)
    weak = config.modality("weak")
    assert (weak.kind, weak.encoder, weak.dim, weak.freeze, weak.pretrained) == (
        "vector", "mlp", 32, False, "")
    assert weak.options == {} and weak.augment is None  # uci-mfeat reads no columns


def test_values_and_kind_defaults(tmp_path):
    config = load_config(_write(tmp_path, MANIFEST))
    assert config.dataset.root == (tmp_path / "data").resolve()
    assert (config.dataset.train, config.dataset.test, config.dataset.classes) == (
        "train.csv", "test.csv", "classes.txt")
    image, text = config.modalities
    assert image.options == {"column": "image", "image_size": 64}
    assert text.options == {"column": "text", "max_tokens": 64}
    assert text.pretrained == "bert-base-uncased"  # not a path here: kept as a model name
    assert (config.model.fusion, config.model.fused_dim, config.model.dropout) == ("sum", 128, 0.2)
    assert (config.train.epochs, config.train.lr, config.train.encoder_lr) == (3, 0.01, None)
    assert (config.al.initial_budget, config.al.budget, config.al.seed) == (500, 250, 7)


def test_audio_and_video_option_defaults(tmp_path):
    text = MANIFEST.replace('kind = "image"\nencoder = "resnet50"\nimage_size = 64',
                            'kind = "audio"\nencoder = "audio-resnet18"')
    text = text.replace('kind = "text"\nencoder = "bert"\npretrained = "bert-base-uncased"',
                        'kind = "video"\nencoder = "r2plus1d_18"\nframes = 8')
    audio, video = load_config(_write(tmp_path, text)).modalities
    assert audio.options == {"column": "image", "sample_rate": 16000, "clip_seconds": 5.0}
    assert video.options == {"column": "text", "frames": 8, "image_size": 112}


@pytest.mark.parametrize("text", [UCI, MANIFEST])
def test_dump_round_trips(tmp_path, text):
    config = load_config(_write(tmp_path, text))
    other = tmp_path / "elsewhere"
    other.mkdir()
    dumped = _write(other, dump_config(config, header="copy"), "copy.toml")
    again = load_config(dumped)
    assert again.to_dict() == config.to_dict()
    assert dumped.read_text().startswith("# copy\n")
    assert config_from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_relative_pretrained_path_resolves_against_config_folder(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"x")
    text = MANIFEST.replace("image_size = 64", 'image_size = 64\npretrained = "weights.pt"')
    image = load_config(_write(tmp_path, text)).modalities[0]
    assert image.pretrained == str((tmp_path / "weights.pt").resolve())


def _replace(base: str, old: str, new: str) -> str:
    assert old in base, old
    return base.replace(old, new)


BAD = [
    (_replace(UCI, 'kind = "uci-mfeat"', 'kind = "imagenet"'),
     "key 'dataset.kind' is 'imagenet'; choose one of manifest, food101, kinetics-sound, "
     "vggsound, uci-mfeat, hf"),
    (_replace(UCI, 'kind = "uci-mfeat"\n', ""),
     "key 'dataset.kind' is missing; add it (see docs/config.md)"),
    (_replace(MANIFEST, 'encoder = "resnet50"', 'encoder = "resnet7"'),
     "key 'modalities.image.encoder' is 'resnet7'; choose one of resnet18, resnet50, resnet101, vit, clip-vision"),
    (_replace(MANIFEST, 'encoder = "bert"', 'encoder = "resnet18"'),
     "key 'modalities.text.encoder' is 'resnet18'; choose one of bert"),
    (_replace(UCI, 'encoder = "mlp"\ndim = 32', "dim = 32"),
     "key 'modalities.weak.encoder' is missing; add it (see docs/config.md)"),
    (_replace(UCI, 'kind = "vector"\nencoder = "mlp"\ndim', 'encoder = "mlp"\ndim'),
     "key 'modalities.weak.kind' is missing; add it (see docs/config.md)"),
    (_replace(MANIFEST, 'root = "data"\n', ""),
     "key 'dataset.root' is missing; add it (see docs/config.md)"),
    (_replace(MANIFEST, 'root = "data"', 'root = "nowhere"'),
     "key 'dataset.root' is 'nowhere'; is not a folder (paths are relative to the config "
     "file's folder); point it at the data folder"),
    ("[dataset]\nkind = \"uci-mfeat\"\n",
     "key 'modalities' is missing; add one [modalities.<name>] table per modality"),
    (_replace(MANIFEST, "epochs = 3", 'epochs = "ten"'),
     "key 'train.epochs' is 'ten' (string); expected an integer"),
    (_replace(MANIFEST, "epochs = 3", "epochs = 3.0"),
     "key 'train.epochs' is 3.0 (float); expected an integer"),
    (_replace(MANIFEST, "epochs = 3", "epochs = 0"), "key 'train.epochs' is 0; must be >= 1"),
    (_replace(MANIFEST, "lr = 0.01", "lr = true"),
     "key 'train.lr' is True (boolean); expected a number"),
    (_replace(MANIFEST, "epochs = 3", "epoch = 3"),
     "key 'train.epoch' is unknown; known keys here: epochs, batch_size, optimizer, lr, "
     "encoder_lr, weight_decay, num_workers, augment, tensorboard, warmup_epochs, milestones, "
     "betas (see docs/config.md)"),
    (_replace(MANIFEST, "epochs = 3", 'epochs = 3\ntensorboard = "yes"'),
     "key 'train.tensorboard' is 'yes' (string); expected true or false"),
    (_replace(MANIFEST, "image_size = 64", "max_tokens = 64"),
     "key 'modalities.image.max_tokens' is unknown; known keys here: kind, encoder, "
     "pretrained, freeze, dim, column, augment, lr, image_size (see docs/config.md)"),
    (_replace(MANIFEST, "image_size = 64", "image_size = 4"),
     "key 'modalities.image.image_size' is 4; must lie in [16, 2048]"),
    (_replace(MANIFEST, 'fusion = "sum"', 'fusion = "attention"'),
     "key 'model.fusion' is 'attention'; choose one of concat, sum, feature-sum, nl-gate"),
    (_replace(MANIFEST, 'fusion = "sum"', 'fusion = "nl-gate"'),
     "key 'model.fusion' is 'nl-gate'; NL-gate fuses exactly one video modality with encoder "
     "r2plus1d_18 and one audio modality with encoder audio-resnet18, but the modalities are "
     "image (image, resnet50), text (text, bert); change the modalities or use concat or sum"),
    (AV.replace('"nl-gate"', '"nl-gate"\n[modalities.still]\nkind = "image"\nencoder = "resnet18"'),
     "key 'model.fusion' is 'nl-gate'; NL-gate fuses exactly one video modality with encoder "
     "r2plus1d_18 and one audio modality with encoder audio-resnet18, but the modalities are "
     "clip (video, r2plus1d_18), sound (audio, audio-resnet18), still (image, resnet18); "
     "change the modalities or use concat or sum"),
    (_replace(MANIFEST, "dropout = 0.2", "dropout = 1.5"),
     "key 'model.dropout' is 1.5; must lie in [0, 1)"),
    (_replace(MANIFEST, "seed = 7", "seed = -1"), "key 'al.seed' is -1; must be >= 0"),
    (_replace(MANIFEST, "epochs = 3", "epochs = 9223372036854775807"),
     "key 'train.epochs' is 9223372036854775807; must be <= 100000 (see docs/config.md)"),
    (_replace(MANIFEST, "epochs = 3", "batch_size = 1000001"),
     "key 'train.batch_size' is 1000001; must be <= 1000000 (see docs/config.md)"),
    (_replace(MANIFEST, "epochs = 3", "num_workers = 1025"),
     "key 'train.num_workers' is 1025; must be <= 1024 (see docs/config.md)"),
    (_replace(MANIFEST, "budget = 250", "budget = 2147483648"),
     "key 'al.budget' is 2147483648; must be <= 2147483647 (see docs/config.md)"),
    (_replace(MANIFEST, "initial_budget = 500", "initial_budget = 10000000000"),
     "key 'al.initial_budget' is 10000000000; must be <= 2147483647 (see docs/config.md)"),
    (_replace(MANIFEST, "seed = 7", "seed = 9223372036854775808"),
     "key 'al.seed' is 9223372036854775808; must be <= 9223372036854775807 (see docs/config.md)"),
    (_replace(MANIFEST, "fused_dim = 128", "fused_dim = 65537"),
     "key 'model.fused_dim' is 65537; must be <= 65536 (see docs/config.md)"),
    (_replace(MANIFEST, "image_size = 64", "image_size = 64\ndim = 100000000"),
     "key 'modalities.image.dim' is 100000000; must be <= 65536 (see docs/config.md)"),
    (_replace(UCI, '["fac", "fou"]', '["fac", "abc"]'),
     "key 'dataset.views[1]' is 'abc'; choose one of fac, fou, kar, mor, pix, zer"),
    (_replace(UCI, '["fac", "fou"]', '["fac", "fac"]'),
     "key 'dataset.views' is ['fac', 'fac']; must list distinct views"),
    (_replace(UCI, '["fac", "fou"]', '["fac", "fou", "kar"]'),
     "key 'dataset.views' is ['fac', 'fou', 'kar']; lists 3 views but there are 2 "
     "[modalities.*] tables; give one vector modality per view, in order"),
    (_replace(UCI, 'kind = "vector"\nencoder = "mlp"\ndim', 'kind = "image"\nencoder = "resnet18"\ndim'),
     "key 'modalities.weak.kind' is 'image'; is not available in a uci-mfeat dataset; "
     "choose one of vector"),
    (_replace(MANIFEST, 'image_size = 64', 'image_size = 64\npretrained = "missing.pt"'),
     "key 'modalities.image.pretrained' is 'missing.pt'; does not exist (relative paths start "
     "at the config file's folder); fix the path or use \"\""),
    (_replace(UCI, 'views = ["fac", "fou"]', 'views = ["fac", "fou"]\nextra = 1'),
     "key 'dataset.extra' is unknown; known keys here: kind, root, train, test, classes, "
     "multi_label, views, test_fraction, standardize, hf_name, hf_config, label_column, "
     "id_column (see docs/config.md)"),
    (_replace(UCI, "[dataset]", "[data]"),
     "key 'data' is unknown; known keys here: dataset, modalities, model, train, al "
     "(see docs/config.md)"),
    (_replace(MANIFEST, "[modalities.image]", "[modalities.mm]"),
     "key 'modalities.mm' is 'mm'; 'mm' names the fused logits; rename the modality"),
    ("[dataset\nkind = 1", "is not valid TOML (Expected ']' at the end of a table "
     "declaration (at line 1, column 9))"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no such config file; pass the path of a TOML file"):
        load_config(tmp_path / "absent.toml")


def test_example_configs_load(tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples"
    uci = load_config(examples / "uci.toml")
    assert uci.dataset.options["views"] == ("fac", "fou") and uci.modality_names == ["fac", "fou"]
    food_text = (examples / "food101.toml").read_text()
    assert 'root = "../data/food101"' in food_text
    (tmp_path / "food").mkdir()
    food = load_config(_write(tmp_path, food_text.replace("../data/food101", "food"), "f.toml"))
    assert [(m.kind, m.encoder) for m in food.modalities] == [("image", "resnet101"),
                                                              ("text", "bert")]
    assert food.model.fusion == "concat"


def test_logging_keys_are_off_by_default_and_left_out_of_the_results_dict(tmp_path):
    config = load_config(_write(tmp_path, _replace(MANIFEST, "epochs = 3",
                                                   "epochs = 3\ntensorboard = true")))
    assert config.train.tensorboard is True and TrainConfig().tensorboard is False
    assert config.to_dict()["train"]["tensorboard"] is True
    without = config.to_dict(logging=False)
    assert "tensorboard" not in without["train"]
    assert without == {**config.to_dict(), "train": {k: v for k, v in
                                                     config.to_dict()["train"].items()
                                                     if k != "tensorboard"}}


def test_dump_writes_only_the_keys_of_the_dataset_kind(tmp_path):
    """A manifest workspace's mmal.toml carried uci-mfeat's views and standardize."""
    for text, absent in ((MANIFEST, ("views", "standardize", "test_fraction", "hf_name")),
                         (UCI, ("train =", "test =", "classes", "multi_label", "column",
                                "hf_name", "label_column"))):
        dumped = dump_config(load_config(_write(tmp_path, text)))
        assert not [key for key in absent if key in dumped], dumped


def test_a_config_mmal_init_wrote_with_every_kinds_keys_still_loads_to_the_same(tmp_path):
    """Older mmal wrote every kind's keys at their defaults: those load, and compare equal."""
    old = {"MANIFEST": _replace(MANIFEST, 'root = "data"', 'root = "data"\nviews = ["fac", "fou"]'
                                '\ntest_fraction = 0.2\nstandardize = true\nhf_name = ""'),
           "UCI": _replace(UCI, 'views = ["fac", "fou"]', 'views = ["fac", "fou"]\ntrain = ""\n'
                           'test = ""\nclasses = ""\nmulti_label = false\nlabel_column = "label"')
           .replace('dim = 32', 'dim = 32\ncolumn = "weak"')}
    for text in (MANIFEST, UCI):
        new = load_config(_write(tmp_path, text))
        assert load_config(_write(tmp_path, old["UCI" if text is UCI else "MANIFEST"],
                                  "old.toml")).to_dict() == new.to_dict()


@pytest.mark.parametrize("base,old,new,message", [
    (MANIFEST, 'root = "data"', 'root = "data"\nstandardize = false',
     "key 'dataset.standardize' is False; applies to dataset kind uci-mfeat only, not manifest; "
     "remove it"),
    (MANIFEST, 'root = "data"', 'root = "data"\ntest_fraction = 0.5',
     "key 'dataset.test_fraction' is 0.5; applies to dataset kinds uci-mfeat, hf only, not "
     "manifest; remove it"),
    (UCI, 'views = ["fac", "fou"]', 'views = ["fac", "fou"]\nmulti_label = true',
     "key 'dataset.multi_label' is True; applies to dataset kinds manifest, food101, "
     "kinetics-sound, vggsound, hf only, not uci-mfeat; remove it"),
    (UCI, 'dim = 32', 'dim = 32\ncolumn = "x"',
     "key 'modalities.weak.column' is 'x'; applies to dataset kinds manifest, hf only, not "
     "uci-mfeat; remove it"),
])
def test_a_key_of_another_dataset_kind_that_would_do_something_is_an_error(tmp_path, base, old,
                                                                          new, message):
    path = _write(tmp_path, _replace(base, old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_config_that_is_not_utf8_gives_one_line(tmp_path):
    from click.testing import CliRunner

    from mmal.cli import cli

    path = tmp_path / "mmal.toml"
    path.write_bytes(b'[dataset]\nkind = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: is not UTF-8 text (byte 18 is b'\\xff'); TOML must be "
                               "UTF-8: save the file as UTF-8, or pass the right file")
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "ws"), "--config", str(path)])
    assert result.exit_code == 1 and result.output == f"Error: {info.value}\n"


def test_cli_init_refuses_an_endless_epoch_count(tmp_path):
    from click.testing import CliRunner

    from mmal.cli import cli

    path = _write(tmp_path, _replace(UCI, "[modalities.strong]",
                                     "[train]\nepochs = 9223372036854775807\n\n[modalities.strong]"))
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "ws"), "--config", str(path)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}: key 'train.epochs' is 9223372036854775807; must be "
                             "<= 100000 (see docs/config.md)\n")
    assert not (tmp_path / "ws").exists()


# ----------------------------------------------------------------------------- augmentation

def _augment_config(tmp_path, image_augment, train_augment=True):
    image = "" if image_augment is None else f"\naugment = {image_augment}"
    text = _replace(MANIFEST, "image_size = 64", "image_size = 64" + image)
    text = _replace(text, "lr = 0.01", f"lr = 0.01\naugment = {str(train_augment).lower()}")
    return load_config(_write(tmp_path, text))


@pytest.mark.parametrize("image_augment,train_augment,want", [
    (None, True, ("crop", "flip")),      # unset: as train.augment says
    (None, False, ()),
    ('["crop"]', True, ("crop",)),       # digits or text in images: no mirror
    ('["flip", "crop"]', False, ("crop", "flip")),  # the modality's own choice wins either way
    ("false", True, ()),
    ("true", False, ("crop", "flip")),
])
def test_augment_per_modality_overrides_train_augment(tmp_path, image_augment, train_augment,
                                                      want):
    config = _augment_config(tmp_path, image_augment, train_augment)
    assert config.augmentations() == {"image": want, "text": ()}
    again = load_config(_write(tmp_path, dump_config(config), "again.toml"))
    assert again.augmentations() == config.augmentations() and again.to_dict() == config.to_dict()
    assert ("augment = [" in dump_config(config)) == (image_augment is not None)


@pytest.mark.parametrize("value,message", [
    ('["crop", "rotate"]', "key 'modalities.image.augment' is ['crop', 'rotate']; image "
     "modalities have no augmentation 'rotate'; choose among crop, flip"),
    ('"crop"', "key 'modalities.image.augment' is 'crop' (string); expected true, false or a "
     "list of augmentation names"),
])
def test_a_bad_augment_is_one_line(tmp_path, value, message):
    with pytest.raises(ConfigError) as info:
        _augment_config(tmp_path, value)
    assert str(info.value).endswith(f"mmal.toml: {message}")


def test_text_has_no_augmentation_to_choose(tmp_path):
    text = _replace(MANIFEST, 'pretrained = "bert-base-uncased"',
                    'pretrained = "bert-base-uncased"\naugment = ["flip"]')
    with pytest.raises(ConfigError, match="text modalities have no augmentation 'flip'; use false"):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum", "nl-gate"])
def test_every_fusion_is_accepted_for_video_and_audio_in_either_order(tmp_path, fusion):
    video, audio = AV.index("[modalities.clip]"), AV.index("[modalities.sound]")
    model = AV.index("[model]")
    swapped = AV[:video] + AV[audio:model] + AV[video:audio] + AV[model:]
    for text, order in ((AV, ["clip", "sound"]), (swapped, ["sound", "clip"])):
        config = load_config(_write(tmp_path, text.replace('"nl-gate"', f'"{fusion}"')))
        assert config.model.fusion == fusion and config.modality_names == order


def test_a_modalitys_own_encoder_rate_is_read_checked_and_written_back(tmp_path):
    text = _replace(MANIFEST, "image_size = 64", "image_size = 64\nlr = 2e-4")
    config = load_config(_write(tmp_path, text))
    assert [m.lr for m in config.modalities] == [2e-4, None]
    again = load_config(_write(tmp_path, dump_config(config), "again.toml"))
    assert again.to_dict() == config.to_dict() and again.modalities[0].lr == 2e-4
    with pytest.raises(ConfigError, match="key 'modalities.image.lr' is -1.0; must be >= 0"):
        load_config(_write(tmp_path, _replace(MANIFEST, "image_size = 64",
                                              "image_size = 64\nlr = -1.0"), "bad.toml"))
