"""The embedded default model: a tiny but real Qwen2-VL, built locally with no network.

Real architecture (``Qwen2VLForConditionalGeneration``), real processor (``Qwen2VLProcessor``
with its image and video processors), and a small byte-level BPE tokenizer trained here with
the ``tokenizers`` library on the task's own text, carrying Qwen2-VL's special tokens and chat
template. Sizes follow a probe that found them to learn the digits task on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

from mssr_cli.models.chat_template import QWEN2VL_CHAT_TEMPLATE, SPECIAL_TOKENS

IMAGE_SIZE = 56  # px: 4x4 patches of 14 px, merged 2x2 -> 4 image tokens per digit
VOCAB_SIZE = 384  # 256 byte symbols + special tokens + ~110 merges


def _tokenizer_corpus(task: str = "digits") -> list[str]:
    """Text the BPE merges are learnt from: the chat frame, the task's prompts and answers."""
    if task == "digit_sum":
        return _digit_sum_corpus()
    from mssr_cli.data.digits import QUESTION
    from mssr_cli.data.prompts import boxed, user_prompt

    frame = ["system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    prompts = [user_prompt(QUESTION)[0]["content"]]
    answers = [boxed(str(d)) for d in range(10)] + [f"<think>The digit is {d}.</think>" for d in range(10)]
    math = ["The answer is 42.", "Let x = 3, then 2x + 1 = 7.", "Therefore, the final answer is"]
    return (frame + prompts * 20 + answers * 20 + math) * 5


def _digit_sum_corpus() -> list[str]:
    """The digit_sum task's text: its prompt and a few hundred written-out chains (fixed seed), so the
    prompt and the chain's frame (``<think>``, ``</think> \\boxed{``) are a few tokens each."""
    import random

    from mssr_cli.data.digit_sum import MAX_DIGITS, MIN_DIGITS, QUESTION, chain
    from mssr_cli.data.prompts import think_prompt

    draw = random.Random(0)
    frame = ["system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    prompt = think_prompt(QUESTION)[0]["content"]
    chains = [chain([draw.randrange(10) for _ in range(draw.randint(MIN_DIGITS, MAX_DIGITS))]) for _ in range(400)]
    return (frame + [prompt] * 20) * 5 + chains


def build_tokenizer(task: str = "digits"):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen2-VL's specials and chat template, its
    merges learnt on ``task``'s text (``digits`` or ``digit_sum``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if task == "digit_sum":  # numbers digit by digit: a digit is one token, a sum is its digits in order
        bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bpe.pre_tokenizer])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(task), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",  # generation (TRL, validation) needs left padding
        model_max_length=4096,
    )
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer, min_pixels: int = IMAGE_SIZE * IMAGE_SIZE, max_pixels: int = IMAGE_SIZE * IMAGE_SIZE):
    """The real ``Qwen2VLProcessor``; the default pixel bounds pin every digit to 56x56 px (digit_sum:
    ``digit_sum.pixel_bounds`` keep its 224x56 px row of four digit slots as drawn)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )


def build_model(tokenizer, seed: int):
    """A randomly initialised ``Qwen2VLForConditionalGeneration`` of about 0.9M parameters."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    hidden, heads = 128, 4
    head_dim = hidden // heads
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            # M-RoPE splits head_dim/2 rotary frequencies over (time, height, width): must sum to 16
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": hidden,  # the merger projects vision features to the text width
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    gen = model.generation_config
    gen.eos_token_id = [ids("<|im_end|>"), ids("<|endoftext|>")]
    gen.pad_token_id = ids("<|endoftext|>")
    gen.bos_token_id = ids("<|endoftext|>")
    gen.do_sample = False
    return model


def save_pretrained(model, processor, folder: Path) -> None:
    """Save model and processor in Hugging Face format (reloadable with Auto* classes)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
