"""Tiny random-weight chat models built offline from configs, saved with save_pretrained and loaded back by path
the way users load Hub ids. `script` makes a random model answer a chosen text through the real generate() path
(a growing sequence_bias along the answer's tokens, stored in generation_config.json)."""

from __future__ import annotations

from pathlib import Path

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# ChatML: a message per turn; an image part becomes the vision placeholder the Qwen2-VL processor expands.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{%- for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor -%}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from u2s_hf import prompts

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [prompts.template(n) for n in ("flag", "caption", "instruct", "merge")] + ["A person walks a dog."]
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def script(model, tok, answer: str) -> None:
    """Greedy decoding of `model` will say `answer`, then stop: biases that grow along the answer's tokens."""
    from transformers import GenerationConfig

    ids = [*tok.encode(answer, add_special_tokens=False), tok.eos_token_id]
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
        sequence_bias=[[ids[: i + 1], 50.0 * (i + 1) ** 2] for i in range(len(ids))],
    )


def vlm(folder: Path, answer: str) -> Path:
    """A tiny Qwen2.5-VL that answers `answer` to any image and prompt."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    script(model, tok, answer)
    model.save_pretrained(folder)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2
        ),
        video_processor=Qwen2VLVideoProcessor(min_pixels=28 * 28, max_pixels=56 * 56),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


def chat_lm(folder: Path, answer: str) -> Path:
    """A tiny Qwen3 chat LM that answers `answer` to any prompt."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = tokenizer()
    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=4096,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=None,
            tie_word_embeddings=True,
        )
    )
    script(model, tok, answer)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def clip_tokenizer(texts: list[str]):
    """A small CLIP-style BPE (lower-cased words with an end-of-word suffix), as diffusers' SD pipelines expect."""
    import json

    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import CLIPTokenizer

    bpe = Tokenizer(BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"<\|startoftext\|>|<\|endoftext\|>|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        texts,
        trainer=trainers.BpeTrainer(
            vocab_size=400,
            initial_alphabet=alphabet,
            special_tokens=["<|startoftext|>", "<|endoftext|>"],
            end_of_word_suffix="</w>",
            show_progress=False,
        ),
    )
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    for char in sorted(alphabet):  # every single byte-character must exist as a whole word too
        vocab.setdefault(char + "</w>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def sd_vae():
    """The tiny Stable Diffusion VAE (three blocks: VAE scale factor 4) of the SD 1.x pipelines here."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 8),
        norm_num_groups=8,
        layers_per_block=1,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=64,
    )


def sd_unet(in_channels: int, outer: str):
    """A tiny two-level UNet2DConditionModel of the SD 1.x pipelines here (latent 16, cross-attention dim 32);
    `outer` is "CrossAttn" for attention at the outer level too, "" for none there."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=(f"{outer}DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", f"{outer}UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )


def clip_text_encoder(tok):
    """A tiny CLIPTextModel (hidden size 32) for `tok`, the text encoder of the SD 1.x pipelines here."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )


def instruct_pix2pix(folder: Path) -> Path:
    """A tiny StableDiffusionInstructPix2PixPipeline (VAE scale factor 4), saved like a Hub checkpoint."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    torch.manual_seed(0)
    tok = clip_tokenizer(
        [
            "a person with short grey hair in a blue suit",
            "a realistic image of a cat",
            "make the person a tall man with red hair",
        ]
        * 20
    )
    unet = sd_unet(in_channels=8, outer="")  # attention only at the inner level
    vae = sd_vae()
    text_encoder = clip_text_encoder(tok)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def sd15(folder: Path) -> Path:
    """A tiny StableDiffusionPipeline laid out like Stable Diffusion 1.5 (the same VAE and text encoder as the
    InstructPix2Pix one; self-attention at both UNet levels, so the outer level is there to be left alone; SD 1.5's
    PNDM scheduler config, which an editor that samples with DDIM converts), saved like a Hub checkpoint."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    torch.manual_seed(0)
    tok = clip_tokenizer(
        ["a person with short grey hair in a blue suit", "a tall man with red hair", "a realistic image of a cat"] * 20
    )
    unet = sd_unet(in_channels=4, outer="CrossAttn")
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    StableDiffusionPipeline(
        vae=sd_vae(),
        text_encoder=clip_text_encoder(tok),
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def sd3(folder: Path) -> Path:
    """A tiny StableDiffusion3Pipeline without T5 (load it with text_encoder_3=False); VAE scale factor 2."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = clip_tokenizer(["a person in an orange space suit", "a tall man with grey hair in a blue suit"] * 20)
    clip = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=64,
    )
    vae = AutoencoderKL(
        sample_size=32,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=tok,
        text_encoder_3=None,
        tokenizer_3=None,
    ).save_pretrained(folder)
    return folder


def open_clip_model(folder: Path) -> str:
    """A tiny random open_clip model in the `local-dir:` layout (the same code path as `hf-hub:` ids)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    open_clip.factory._MODEL_CONFIGS["u2s-tiny-clip"] = config
    model = open_clip.create_model("u2s-tiny-clip", pretrained=None)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    save_config_for_hf(model, folder / "open_clip_config.json", config)
    return f"local-dir:{folder}"


def vit_mae(folder: Path) -> Path:
    """A tiny random ViTMAE laid out like facebook/vit-mae-base: a ViTMAEForPreTraining checkpoint (encoder under
    `vit.`, plus the decoder) with the default mask_ratio 0.75, and a ViTImageProcessor (32x32, ImageNet stats)."""
    import torch
    from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    config = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    ViTMAEForPreTraining(config).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    ).save_pretrained(folder)
    return folder


def blip2(folder: Path) -> Path:
    """A tiny BLIP-2 (ViT, Q-Former, OPT) laid out like Salesforce/blip2-opt-2.7b: 28-px images (2 x 2 patches),
    4 query tokens written as the processor's `<image>` placeholder."""
    import torch
    from transformers import AddedToken, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    torch.manual_seed(0)
    tok = tokenizer()
    tok.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            initializer_range=0.02,  # BLIP-2's default (1e-10) makes a vision encoder that sees nothing
        ),
        qformer_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=len(tok),
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=128,
            word_embed_proj_dim=32,
            bos_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    model = Blip2ForConditionalGeneration(config)
    torch.nn.init.normal_(model.query_tokens, std=0.02)  # BLIP-2 starts them at 0 (a checkpoint brings its own)
    model.save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": 28, "width": 28})
    Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=4).save_pretrained(folder)
    return folder


def qwen3_vl(folder: Path) -> Path:
    """A tiny Qwen3-VL (Qwen3VLForConditionalGeneration) with its processor: 16-px patches merged 2 x 2, images
    resized to 32-64 px a side (at most 4 image tokens), the ChatML template."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    torch.manual_seed(0)
    tok = tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=4096,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=32,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.save_pretrained(folder)
    pixels = dict(patch_size=16, merge_size=2, temporal_patch_size=2)
    Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=64 * 64, **pixels),
        video_processor=Qwen3VLVideoProcessor(**pixels),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(folder)
    return folder
