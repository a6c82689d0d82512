"""MMAudio's CLIP (open_clip DFN5B-CLIP-ViT-H-14-384): the `mmaudio/parity/clip_tiny` vector through
release-format files, the released key list, the tokenizer against open_clip's ids, and loader errors."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.clip import ClipImageEncoder, MMAudioClip, preprocess_frames
from syncfoley.models.clip_config import ClipConfig, release
from syncfoley.models.clip_tokenizer import default_tokenizer, tokenize

ATOL = 1e-5  # the vector's suggested tolerance; the towers' quirks move outputs by 2e-4 .. 1.1
RELEASE_PARAMS = 986_714_881

# open_clip 3.3.0 `SimpleTokenizer(clean='lower').encode(prompt)` (no start/end tokens), recorded once.
GOLDEN_IDS = {
    "  A   Dog\tBARKING \n ": [320, 1929, 32676],
    "it’s a “quoted” thing": [585, 568, 320, 257, 27706, 257, 946],
    "don't can't I'm we'll they'd you've she's": [847, 713, 753, 713, 328, 880, 649, 1342, 889, 1896, 592, 1200, 1043,
                                                  568],
    "café naïve résumé Zoë ﬁne": [15304, 1097, 35689, 563, 29106, 7054, 4166, 4397, 40520, 3797],
    "🐶🔥 dog emoji 👍🏽": [14466, 3016, 1929, 16327, 43722],
    "東京の雨の音": [48338, 21078, 105, 21575, 165, 249, 101, 21575, 165, 253, 367],
    "Ｆｕｌｌｗｉｄｔｈ １２３": [9407, 23571, 272, 273, 274],
    "numbers 1234567 3.14 1,000,000 2nd": [6121, 272, 273, 274, 275, 276, 277, 278, 274, 269, 272, 275, 272, 267, 271,
                                           271, 271, 267, 271, 271, 271, 273, 1764],
    "punctuation!!! ??? ... @#$%^&*()": [47051, 995, 3824, 678, 31, 2, 3, 4, 61, 5, 9, 8475],
    "&amp; &lt;b&gt; &amp;amp;": [261, 283, 321, 285, 261],
    # With a tag ftfy leaves entities alone, so the two html.unescape calls show.
    "<b>&amp;amp;</b> &amp;amp;amp;": [283, 321, 29, 5, 34308, 321, 285, 261, 6259, 282],
    "<start_of_text> literal <END_OF_TEXT>": [49406, 24269, 49407],
    "mojibake: cafÃ© â€œhiâ€\x9d": [617, 3252, 11878, 281, 15304, 257, 1883, 257],
    "\xa0nbsp\u2003emspace\u200bzero width": [6459, 4393, 908, 2138, 9844, 5848, 23571],
    "Привет мир": [26302, 16370, 29503, 110, 22176, 141, 480, 38018, 16701, 141, 478],
    "½ ² ³ ٣": [33613, 41175, 126, 367, 149, 352],
    "ǅ ß İ": [67, 129, 378, 127, 509, 328, 16384],
    "soft\xadhyphen": [3773, 22618, 1441, 745, 576],
    "——em—dash… ellipsis": [44800, 2270, 2005, 10206, 959, 3367, 33041],
    "combining e\u0301 vs é": [23561, 4166, 1547, 4166],
    "ｶﾀｶﾅ": [37367, 34941, 37367, 2429, 488],
    "dog's dogs' C++ e-mail@x.com": [1929, 568, 3255, 262, 322, 19056, 324, 268, 2614, 287, 343, 269, 2464],
    "supercalifragilisticexpialidocious": [1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466],
    "rain on a tin roof, thunder in the distance": [2443, 525, 320, 5420, 6449, 267, 8951, 530, 518, 7964],
}


@pytest.fixture(scope="module")
def vector(reference_dir, seeded):
    """(json, seeded open_clip state dict, io tensors) of `mmaudio/parity/clip_tiny`."""
    from safetensors.torch import load_file

    folder = reference_dir / "mmaudio" / "parity"
    config = json.loads((folder / "clip_tiny.json").read_text())
    keys = seeded.read_key_list(folder / "clip_tiny.keys.txt")
    state_dict = seeded.seeded_state_dict(keys, config["seed"], gain=config["gain"])
    return config, state_dict, load_file(str(folder / "clip_tiny.io.safetensors"))


@pytest.fixture(scope="module")
def release_bin(vector, tmp_path_factory):
    """The tiny weights as `open_clip_pytorch_model.bin` (a torch pickle of the open_clip state dict)."""
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(vector[1], path)
    return path


def check_outputs(model: MMAudioClip, io: dict, atol: float = ATOL) -> None:
    images = model.encode_image(io["images"].flatten(0, 1), batch_size=4)
    torch.testing.assert_close(images.float().view_as(io["image_features"]), io["image_features"], atol=atol, rtol=0)
    tokens = io["text_tokens"]
    full = model.encode_text_tokens(tokens).float()
    torch.testing.assert_close(full, io["text_features_full"], atol=atol, rtol=0)
    torch.testing.assert_close(model.encode_text_pooled(tokens).float(), io["text_features_pooled"], atol=atol, rtol=0)


# ----------------------------------------------------------------------------------------------
# Parity vector through release-format files


def test_bin_pickle_reproduces_vector(vector, release_bin):
    config, _, io = vector
    model = MMAudioClip.from_checkpoint(release_bin, config=config["constructor"])
    assert model.state_dict()["logit_scale"].shape == ()  # the file's (1,) is taken as open_clip does
    check_outputs(model, io)
    assert model.frame_spec.size == config["image_px"] and model.frame_spec.fps == 8


def test_open_clip_config_beside_the_file_is_used(vector, release_bin):
    config, _, io = vector
    (release_bin.parent / "open_clip_config.json").write_text(json.dumps({"model_cfg": config["constructor"]}))
    try:
        check_outputs(MMAudioClip.from_checkpoint(release_bin), io)
    finally:
        (release_bin.parent / "open_clip_config.json").unlink()


@pytest.mark.parametrize("prefix", ["clip.", "model.", "cond_stage_model.model."])
def test_prefixed_safetensors_reproduce_vector(vector, tmp_path, prefix):
    config, state_dict, io = vector
    path = tmp_path / "clip.safetensors"
    save_file({prefix + k: v.contiguous() for k, v in state_dict.items()}, str(path))
    check_outputs(MMAudioClip.from_checkpoint(path, config=config["constructor"]), io)


def test_fp16_safetensors_computes_in_fp16_by_default(vector, tmp_path):
    config, state_dict, io = vector
    path = tmp_path / "apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors"
    save_file({"clip." + k: v.half().contiguous() for k, v in state_dict.items()}, str(path))
    half = MMAudioClip.from_checkpoint(path, config=config["constructor"])
    assert half.dtype == torch.float16 and half.visual.conv1.weight.dtype == torch.float16
    check_outputs(half, io, atol=2e-3)  # fp16 rounding of weights and activations (measured 6e-4)
    rounded = {k: v.half().float() for k, v in state_dict.items()}
    widened = MMAudioClip.from_checkpoint(path, config=config["constructor"], dtype=torch.float32)
    exact = MMAudioClip.from_checkpoint(rounded, config=config["constructor"])
    torch.testing.assert_close(widened.encode_image(io["images"][0]), exact.encode_image(io["images"][0]),
                               atol=0, rtol=0)


def test_chunked_image_encoding_is_the_same(vector):
    config, state_dict, io = vector
    model = MMAudioClip.from_checkpoint(state_dict, config=config["constructor"])
    images = io["images"].flatten(0, 1)
    torch.testing.assert_close(model.encode_image(images, batch_size=1), model.encode_image(images, batch_size=6),
                               atol=1e-6, rtol=0)


def test_patch_conv_ignores_pixels_past_the_last_whole_patch(vector):
    config, state_dict, io = vector
    model = MMAudioClip.from_checkpoint(state_dict, config=config["constructor"])
    images = io["images"][0]
    used = config["pixels_used_by_patch_conv"]
    cropped = images[..., :used, :used]
    torch.testing.assert_close(model.encode_image(images), model.encode_image(cropped), atol=0, rtol=0)
    with pytest.raises(ValueError, match="whole patches"):
        model.encode_image(images[..., : used - 1, :])


# ----------------------------------------------------------------------------------------------
# Preprocessing and the pipeline adapters


def test_preprocessing_reproduces_vector(vector):
    config, _, io = vector
    frames = io["pre_frames_uint8"].permute(0, 2, 3, 1)  # the vector is (T, C, h, w); ours take [T, H, W, C]
    size = config["image_px"]
    out = preprocess_frames(frames, size)
    torch.testing.assert_close(out, io["pre_normalized"], atol=0, rtol=0)  # bit for bit
    # Float frames in [0, 1] (a ComfyUI IMAGE) are quantised as the video decode gives them.
    torch.testing.assert_close(preprocess_frames(frames.float() / 255, size), out, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        preprocess_frames(io["pre_frames_uint8"], size)


def test_image_adapter_takes_the_media_packages_frames(vector):
    """The pipeline hands frames as u / 127.5 - 1; the adapter must see MMAudio's exact input."""
    config, state_dict, io = vector
    model = MMAudioClip.from_checkpoint(state_dict, config=config["constructor"])
    frames = io["pre_frames_uint8"].permute(0, 2, 3, 1)
    resized = torch.nn.functional.interpolate(io["pre_frames_uint8"], size=(64, 64), mode="bicubic", antialias=True)
    media_input = resized.float().div(127.5).sub(1.0)
    encoder = model.image_encoder()
    assert isinstance(encoder, ClipImageEncoder) and encoder.frame_spec == model.frame_spec
    expected = model.encode_image(preprocess_frames(frames, 64))
    torch.testing.assert_close(encoder.encode(media_input), expected, atol=0, rtol=0)


def test_text_adapter_gives_per_token_features(vector):
    config, state_dict, io = vector
    model = MMAudioClip.from_checkpoint(state_dict, config=config["constructor"])
    features = model.text_encoder().encode(config["inputs"]["text_tokens"]["prompts"])
    torch.testing.assert_close(features, io["text_features_full"], atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# The released model's layout


def test_release_meta_build_matches_key_list(reference_dir):
    lines = (reference_dir / "mmaudio" / "keys" / "clip_dfn5b_vit_h_14_384.keys.txt").read_text().splitlines()
    expected = {name: tuple(eval(shape)) for name, shape in (ln.split("\t") for ln in lines if not ln.startswith("#"))}
    with torch.device("meta"):
        model = MMAudioClip()
    built = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert built == expected
    assert sum(t.numel() for t in model.state_dict().values()) == RELEASE_PARAMS
    assert model.frame_spec.size == 384 and model.frame_spec.resize == "stretch"
    assert model.frame_spec.interpolation == "bicubic" and model.frame_spec.fps == 8


def test_release_shapes_load_without_config():
    with torch.device("meta"):
        state_dict = MMAudioClip().state_dict()
    state_dict["logit_scale"] = state_dict["logit_scale"].reshape(1)  # the hub file's nonscalar logit_scale
    model = MMAudioClip.from_checkpoint({"model." + k: v for k, v in state_dict.items()})
    assert model.config == release() and model.config.vision_heads == 16 and model.config.text_heads == 16


def test_open_clip_builtin_config_is_the_release():
    builtin = {"embed_dim": 1024, "quick_gelu": True,
               "vision_cfg": {"image_size": 378, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}
    assert ClipConfig.from_open_clip(builtin) == release()
    hub = {"model_cfg": {**builtin, "nonscalar_logit_scale": True,
                         "vision_cfg": {**builtin["vision_cfg"], "image_size": 384}}}
    assert ClipConfig.from_open_clip(hub).grid == 27
    with pytest.raises(ValueError, match="attentional_pool"):
        ClipConfig.from_open_clip({**builtin, "vision_cfg": {**builtin["vision_cfg"], "attentional_pool": True}})
    with pytest.raises(ValueError, match="unknown open_clip option text_cfg.rope"):
        ClipConfig.from_open_clip({**builtin, "text_cfg": {**builtin["text_cfg"], "rope": True}})


# ----------------------------------------------------------------------------------------------
# Loader errors


def test_other_sizes_without_config_ask_for_it(vector):
    with pytest.raises(CheckpointError, match="Pass config="):
        MMAudioClip.from_checkpoint(vector[1])


@pytest.mark.parametrize("key, named", [
    ("vision_model.embeddings.patch_embedding.weight", "SigLIP"),
    ("text_model.embeddings.word_embeddings.weight", "CLAP"),
    ("triple_blocks.0.audio_mod.linear.weight", "HunyuanVideo-Foley"),
])
def test_other_models_are_named(key, named):
    with pytest.raises(CheckpointError, match=f"{named}.*expects an open_clip CLIP"):
        MMAudioClip.from_checkpoint({key: torch.zeros(2, 2)})


def test_missing_tensor_is_named(vector):
    config, state_dict, _ = vector
    broken = {k: v for k, v in state_dict.items() if k != "visual.ln_pre.weight"}
    with pytest.raises(CheckpointError, match=r"missing: visual\.ln_pre\.weight"):
        MMAudioClip.from_checkpoint(broken, config=config["constructor"])


def test_truncated_files_are_refused(release_bin, vector, tmp_path):
    for name, write in (("cut.bin", lambda p: torch.save(vector[1], p)),
                        ("cut.safetensors", lambda p: save_file(vector[1], str(p)))):
        path = tmp_path / name
        write(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="truncated"):
            MMAudioClip.from_checkpoint(path, config=vector[0]["constructor"])


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_code_carrying_pickle_is_refused(vector, tmp_path):
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({**vector[1], "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        MMAudioClip.from_checkpoint(path, config=vector[0]["constructor"])


def test_operations_are_injected(vector):
    from syncfoley.models.ops import CastOps

    class MarkedLinear(CastOps.Linear):
        pass

    class Ops(CastOps):
        Linear = MarkedLinear

    config, state_dict, io = vector
    model = MMAudioClip.from_checkpoint(state_dict, config=config["constructor"], operations=Ops)
    assert isinstance(model.visual.transformer.resblocks[0].mlp.c_fc, MarkedLinear)
    assert isinstance(model.transformer.resblocks[0].attn.out_proj, MarkedLinear)
    check_outputs(model, io)


# ----------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_reproduces_vector(vector):
    config, _, io = vector
    tokens = tokenize(config["inputs"]["text_tokens"]["prompts"])
    assert torch.equal(tokens, io["text_tokens"])
    for row, ids in zip(tokens, config["inputs"]["text_tokens"]["ids_unpadded"]):
        assert row[: len(ids)].tolist() == ids and not row[len(ids):].any()


def test_tokenizer_matches_open_clip():
    tokenizer = default_tokenizer()
    assert {prompt: tokenizer.encode(prompt) for prompt in GOLDEN_IDS} == GOLDEN_IDS


def test_truncation_keeps_the_end_token():
    tokenizer = default_tokenizer()
    fits, cut = "dog " * 75, "dog " * 76  # 'dog' is one token: 75 + 2 fill the 77 exactly
    assert tokenizer([fits])[0].tolist() == [49406] + [1929] * 75 + [49407]
    assert tokenizer([cut])[0].tolist() == [49406] + [1929] * 75 + [49407]
    long = tokenizer(["thunder " * 90, "a" * 200])
    assert long[0, -1] == 49407 and long[0, 0] == 49406 and (long[0, 1:-1] == 8951).all()
    assert long[1, :5].tolist() == [49406, 23126, 23126, 23126, 23126] and (long[1] != 0).sum() == 28
    assert tokenizer([""])[0, :3].tolist() == [49406, 49407, 0]


def test_bpe_matches_the_tokenizers_library():
    """Merges applied by an independent implementation (the `tokenizers` Rust BPE, same merge list)."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import BPE

    tokenizer = default_tokenizer()
    merges = sorted(tokenizer.merge_ranks, key=tokenizer.merge_ranks.get)
    reference = BPE(vocab=dict(tokenizer.ids), merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>")
    to_bytes = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    rng = random.Random(3)
    alphabet = "abcdefghijklmnopqrstuvwxyz etaoinshr 0123456789 '\"!?.,;:-_()[]&#@éüñçßø–—“”‘’…😀🎵东京Ωж"
    prompts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(400)]
    checked = 0
    for word in {w for p in prompts for w in tokenizer.split(p)} - {"<start_of_text>", "<end_of_text>"}:
        (symbols, _), = to_bytes.pre_tokenize_str(word)
        assert list(tokenizer.word_ids(word)) == [t.id for t in reference.tokenize(symbols)], word
        checked += 1
    assert checked > 1000


def test_tokenizer_context_length_follows_config():
    config = replace(release(), context_length=16)
    assert tokenize(["dog"], config.context_length).shape == (1, 16)
