"""Tiny random Janus and Emu3 models with processors built in code (no hub, no downloads).

The tokenizer is byte-level BPE without merges: every UTF-8 byte is a token, so any prompt encodes and
decodes exactly with a vocabulary of ~260 plus the special tokens each processor needs.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, processors
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerFast

# A cut-down Janus chat template: the released one's roles and layout, image placeholder before text. The
# assistant turn starts right after "<|Assistant|>:" so a generated continuation re-tokenizes as itself.
JANUS_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {% else %}<|Assistant|>:{% endif %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image_placeholder>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if not loop.last or add_generation_prompt %}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)

EMU3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() }}: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if not loop.last %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def byte_tokenizer(
    specials: list[str], named: dict[str, str], add_bos: str | None
) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with ``specials`` appended in order; ``named`` sets attributes like ``boi_token``."""
    alphabet = sorted(ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{add_bos} $A", special_tokens=[(add_bos, tok.token_to_id(add_bos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


def tiny_janus(
    seed: int = 0, image_size: int = 32, patch_size: int = 8, use_default_system_prompt: bool = True
):
    """(model, processor): 2 decoder layers of width 32, a 16-token 4×4 image grid, a 64-code VQ codebook."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusProcessor, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    tokenizer = byte_tokenizer(
        ["<bos>", "<eos>", "<pad>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"],
        {
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
        add_bos="<bos>",
    )
    grid = image_size // patch_size
    image_processor = JanusImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        min_size=4,
    )
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=JANUS_CHAT_TEMPLATE,
        num_image_tokens=grid * grid,
        use_default_system_prompt=use_default_system_prompt,
    )
    hidden = 32
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = JanusVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden,
        num_image_tokens=grid * grid,
        mlp_ratio=2.0,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1] * (patch_size.bit_length()),  # 2**(len-1) == patch_size downsampling
        num_res_blocks=1,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
        num_hidden_layers=1,
    )
    config = JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.image_token_id,
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    return model, processor


def emu3_tokenizer(codebook_size: int) -> PreTrainedTokenizerFast:
    visual = [f"<|visual token {i:06d}|>" for i in range(codebook_size)]
    specials = [
        "<|endoftext|>",
        "<|extra_203|>",
        "<|extra_204|>",
        "<image>",
        "<|image start|>",
        "<|image end|>",
        "<|image token|>",
        "<|extra_200|>",
        "<|extra_201|>",
        *visual,
    ]
    return byte_tokenizer(
        specials,
        {
            "bos_token": "<|extra_203|>",
            "eos_token": "<|extra_204|>",
            "pad_token": "<|endoftext|>",
            "image_token": "<image>",
            "boi_token": "<|image start|>",
            "eoi_token": "<|image end|>",
            "image_wrapper_token": "<|image token|>",
            "eof_token": "<|extra_201|>",
        },
        add_bos=None,
    )


def tiny_emu3(seed: int = 0, codebook_size: int = 32, image_side: int = 16):
    """(model, processor): 2 decoder layers of width 32, 8× VQ downsampling (16 px → a 2×2 token grid)."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration, Emu3Processor
    from transformers.models.emu3.configuration_emu3 import Emu3TextConfig, Emu3VQVAEConfig
    from transformers.models.emu3.image_processing_emu3 import Emu3ImageProcessor

    tokenizer = emu3_tokenizer(codebook_size)
    image_processor = Emu3ImageProcessor(
        min_pixels=image_side * image_side,
        max_pixels=image_side * image_side,
        spatial_factor=8,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = Emu3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=EMU3_CHAT_TEMPLATE
    )
    text_config = Emu3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=0.0,
    )
    vq_config = Emu3VQVAEConfig(
        codebook_size=codebook_size,
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1, 1, 1, 1],
        num_res_blocks=1,
        attn_resolutions=[],
        hidden_size=32,
        num_attention_heads=1,
        temporal_downsample_factor=4,
    )
    config = Emu3Config(vq_config=vq_config, text_config=text_config, vocabulary_map=tokenizer.get_vocab())
    torch.manual_seed(seed)
    model = Emu3ForConditionalGeneration(config).eval()
    return model, processor
