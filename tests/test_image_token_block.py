"""`train.block_image_token` (on in the paper recipes): no generation emits the image placeholder token.

The reference's vLLM rollouts put a -100 logit bias on it (`_get_logit_bias`); TRL's HF rollouts suppress it
always. Here: vLLM rollouts get the same bias through GRPOConfig.generation_kwargs, and our own generation
(validation, the tracker warm start) suppresses it. The test makes the image token the tiny model's favourite and
checks that the key removes it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.training.trl_args import rollout_generation_kwargs


def test_vllm_rollouts_get_the_references_logit_bias_and_hf_rollouts_nothing_extra():
    model_config = SimpleNamespace(config=SimpleNamespace(image_token_id=151655))  # a model: its config
    paper = compose(["experiment=paper_7b"]).train
    assert paper.block_image_token and paper.use_vllm
    assert rollout_generation_kwargs(paper, model_config) == {"logit_bias": {151655: -100.0}}
    hf = compose(["experiment=paper_7b", "train.use_vllm=false"]).train
    assert rollout_generation_kwargs(hf, model_config) is None  # TRL's HF path suppresses the token itself
    assert compose([]).train.block_image_token is False
    assert rollout_generation_kwargs(compose(["experiment=paper_7b", "train.block_image_token=false"]).train,
                                     model_config) is None


@pytest.mark.timeout(600)
def test_our_generation_never_emits_the_image_token_when_blocked(tiny_policy_path):
    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.models.generation import generate_answers
    from mssr_cli.models.loading import load_policy

    cfg = compose([])
    model, processor = load_policy(cfg.model, cfg.data)
    image_token = int(model.config.image_token_id)

    def favour_the_image_token(module, inputs, output):
        output[..., image_token] += 1e4
        return output

    rows = load_digits_split("validation", limit=2)
    hook = model.lm_head.register_forward_hook(favour_the_image_token)
    try:
        seen = []
        original = processor.batch_decode

        def keep_ids(ids, **kwargs):  # what was generated, before special tokens are dropped
            seen.append(ids.tolist())
            return original(ids, **kwargs)

        processor.batch_decode = keep_ids
        generate_answers(model, processor, rows, max_new_tokens=4)
        free = seen.pop()
        generate_answers(model, processor, rows, max_new_tokens=4, temperature=1.0, block_image_token=True)
        sampled = seen.pop()
        generate_answers(model, processor, rows, max_new_tokens=4, block_image_token=True)
        greedy = seen.pop()
    finally:
        hook.remove()
    assert all(token == image_token for row in free for token in row), free  # the hook works: it is the favourite
    assert all(image_token not in row for row in sampled + greedy), (sampled, greedy)
