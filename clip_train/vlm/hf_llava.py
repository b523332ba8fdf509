"""`export format=hf` of a VLM stage checkpoint: a transformers `LlavaForConditionalGeneration` folder with its
`LlavaProcessor`, which `pipeline("image-text-to-text", model=FOLDER)` loads and answers with as `.ask` does.

    ours (clip_train.vlm)                        LLaVA in transformers
    the tower's timm trunk, CLIP or SigLIP       vision_config: a CLIPVisionModel / SiglipVisionModel, the weights
      layout (clip_train.interop's checks)         converted by clip_train.interop (trunk_to_clip/siglip_vision)
    vision.layer: timm block b (negative from    vision_feature_layer = b - depth: transformers' hidden_states[0] is
      the end), its tokens before the final norm   the blocks' input (embeddings after the pre-norm), hidden_states[k]
                                                   block k-1's output before post_layernorm, depth + 1 of them
    vision.with_cls on a class-token trunk       vision_feature_select_strategy "full"; without: "default", which
                                                   drops the first token; a SigLIP trunk has none: "full"
    MlpConnector: Linear, GELU (exact), Linear   multi_modal_projector: linear_1, projector_hidden_act "gelu", linear_2
    the causal LM (LoRA merged)                  text_config; its base model as model.language_model, head lm_head
    the <image> id                               image_token_index; the processor expands <image> into
                                                   (size / patch)² + class tokens - dropped ones, as many as ours gives
    prompt_ids (clip_train.vlm.text)             the chat template: "<s>user: <image> QUESTION assistant:" per turn

The processor's image processor does our evaluation preprocessing (`clip_train.interop.hf_write`), its tokenizer
is the stage's own, padding on the left for batched generation. The LLaVA model is built and its logits checked
against ours before anything is written. What LLaVA cannot hold (another tower, another connector, the blind
baseline) is refused by name.
"""

import copy
import os

import torch
import transformers
from peft import PeftModel
from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from clip_train.interop.hf_keys import trunk_to_clip_vision, trunk_to_siglip_vision
from clip_train.interop.hf_write import (
    clip_layout_differences,
    clip_vision_config,
    image_processor,
    siglip_trunk_differences,
    siglip_vision_config,
)
from clip_train.vlm.assistant import VisionLanguageAssistant, load_vlm
from clip_train.vlm.connector import MlpConnector
from clip_train.vlm.conversations import IMAGE
from clip_train.vlm.stages import RECIPE_KEY
from clip_train.vlm.text import prompt_ids

# transformers 5 dropped the `vision_model.` level inside CLIPVisionModel and SiglipVisionModel (their dual
# encoders keep it as an attribute)
VISION_MODEL_LEVEL = "vision_model." if int(transformers.__version__.split(".")[0]) < 5 else ""
TOLERANCE = 1e-4  # on logits, relative to their largest magnitude; float32 kernels in another order differ by ~1e-6
# prompt_ids as a template: "<s>user: <image> QUESTION assistant:" opens the conversation, "ANSWER</s>" closes a turn
# and "user: QUESTION assistant:" opens the next one (the answer and the next turn are encoded apart in
# encode_conversation, so no space joins them); images first in a turn, each as "<image> "
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- 'user: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '<image> ' -}}{%- endfor -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- ' assistant:' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def is_vlm_stage(path: str) -> bool:
    """Whether `path` is a clip_train.vlm stage checkpoint (a file whose top level holds the VLM recipe)."""
    if not os.path.isfile(path):
        return False
    return RECIPE_KEY in torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def tower_layout(assistant: VisionLanguageAssistant) -> str:
    """The transformers vision model the VLM's tower is, "clip" or "siglip"; ValueError naming what it lacks."""
    if "tower" not in assistant.recipe:
        raise ValueError(
            "format=hf: this stage checkpoint was written before stage checkpoints carried the tower's recipe (its "
            "image size and preprocessing); a stage trained from it (init_from=IT vision.checkpoint=ITS_CLIP) exports"
        )
    if assistant.model.blind:
        raise ValueError("format=hf: a blind baseline has no image tower for LLaVA to hold; export the instruct stage")
    connector = assistant.model.connector
    if type(connector) is not MlpConnector:
        raise ValueError(
            f"format=hf: the connector {type(connector).__name__} has no form in LlavaForConditionalGeneration, "
            "whose projector is LLaVA-1.5's MLP (connector=mlp2x, MlpConnector)"
        )
    vision = assistant.model.vision  # ImageFeatures: the tower's `trunk`, as the layout checks read it
    clip, siglip = clip_layout_differences(vision), siglip_trunk_differences(vision.trunk)
    if not clip:
        return "clip"
    if not siglip:
        return "siglip"
    raise ValueError(
        f"format=hf: the image tower ({type(vision.trunk).__name__}) is neither a transformers CLIP nor SigLIP vision model, "
        f"the towers LlavaForConditionalGeneration holds. As CLIP it lacks {'; '.join(clip)}. "
        f"As SigLIP it lacks {'; '.join(siglip)}"
    )


def as_llava(assistant: VisionLanguageAssistant) -> LlavaForConditionalGeneration:
    """A `LlavaForConditionalGeneration` holding the VLM's weights (LoRA adapters merged into the LM first)."""
    layout = tower_layout(assistant)
    model, vision = assistant.model, assistant.model.vision
    if isinstance(model.language_model, PeftModel):
        model.language_model = model.language_model.merge_and_unload()
    language_model, trunk = model.language_model, vision.trunk
    depth, image_size = len(trunk.blocks), assistant.recipe["tower"]["image_size"]
    if layout == "clip":
        vision_config = clip_vision_config(trunk, image_size)
        vision_state = trunk_to_clip_vision(trunk.state_dict(), depth)
    else:
        vision_config = siglip_vision_config(trunk, image_size)
        vision_state = trunk_to_siglip_vision(trunk.state_dict(), depth)
    strategy = "default" if trunk.num_prefix_tokens and not vision.with_cls else "full"
    base = getattr(language_model, language_model.base_model_prefix)
    # LLaVA ties lm_head to the text model's `embed_tokens` by that name: an LM whose embeddings are named otherwise
    # (GPT-2's `wte`) gets its head written as a copy instead, the same weights untied
    tied = language_model.config.tie_word_embeddings and hasattr(base, "embed_tokens")
    text_config = language_model.config.to_dict() | {"tie_word_embeddings": tied}
    config = LlavaConfig(
        vision_config=vision_config.to_dict(), text_config=text_config,
        image_token_index=model.image_token_id, image_seq_length=image_token_count(assistant, strategy),
        projector_hidden_act="gelu", vision_feature_select_strategy=strategy,
        vision_feature_layer=vision.layer % depth - depth, multimodal_projector_bias=True,
        tie_word_embeddings=tied,
    )  # fmt: skip
    llava = LlavaForConditionalGeneration(config)
    first, _, second = model.connector.layers
    level = "model.vision_tower." + VISION_MODEL_LEVEL
    state = {level + key.removeprefix("vision_model."): value for key, value in vision_state.items()}
    state |= {f"model.multi_modal_projector.linear_{n}.{kind}": getattr(layer, kind)
              for n, layer in ((1, first), (2, second)) for kind in ("weight", "bias")}  # fmt: skip
    state |= {f"model.language_model.{key}": value for key, value in base.state_dict().items()}
    state["lm_head.weight"] = language_model.get_output_embeddings().weight
    with torch.no_grad():
        llava.load_state_dict(state, strict=True)
    tokenizer = assistant.tokenizer
    llava.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )  # fmt: skip
    return llava.eval()


def image_token_count(assistant: VisionLanguageAssistant, strategy: str) -> int:
    """How many image tokens LLaVA splices in for one image: the patches, plus the class token unless dropped."""
    trunk, size = assistant.model.vision.trunk, assistant.recipe["tower"]["image_size"]
    patch = trunk.patch_embed.patch_size[0]
    return (size // patch) ** 2 + trunk.num_prefix_tokens - (strategy == "default")


def llava_processor(assistant: VisionLanguageAssistant, config: LlavaConfig) -> LlavaProcessor:
    """Our preprocessing, tokenizer (padding left, for batched generation) and prompt format as a `LlavaProcessor`."""
    tower = assistant.recipe["tower"]
    tokenizer = copy.deepcopy(assistant.tokenizer)
    tokenizer.padding_side = "left"
    return LlavaProcessor(
        image_processor=image_processor(tower["image_size"], tower["image_resize"], tower["image_mean"], tower["image_std"]),
        tokenizer=tokenizer, patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy, chat_template=CHAT_TEMPLATE,
        image_token=IMAGE, num_additional_image_tokens=assistant.model.vision.trunk.num_prefix_tokens,
    )  # fmt: skip


@torch.no_grad()
def check_same_logits(assistant: VisionLanguageAssistant, llava: LlavaForConditionalGeneration) -> None:
    """ValueError unless `llava` gives our next-token logits for two random images and a question."""
    size = assistant.recipe["tower"]["image_size"]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = torch.tensor([prompt_ids(assistant.tokenizer, "describe the image.", with_image=True)] * 2)
    embeds, mask, _ = assistant.model.splice(prompt, torch.ones_like(prompt), pixels)
    ours = assistant.model.language_model(inputs_embeds=embeds, attention_mask=mask).logits
    image_id, count = llava.config.image_token_index, llava.config.image_seq_length
    expanded = torch.tensor([[t for i in row for t in ([i] * count if i == image_id else [i])] for row in prompt.tolist()])
    theirs = llava(input_ids=expanded, pixel_values=pixels).logits
    difference = (ours - theirs).abs().max().item() / max(1.0, ours.abs().max().item())
    if theirs.shape != ours.shape or difference > TOLERANCE:
        raise ValueError(
            f"the exported LlavaForConditionalGeneration would not reproduce our logits (shapes {tuple(theirs.shape)} "
            f"and {tuple(ours.shape)}, relative difference {difference:.2e} > {TOLERANCE}); nothing was written"
        )


def write_llava(checkpoint: str, out: str) -> None:
    """Write the VLM stage checkpoint `checkpoint` to the folder `out` as LLaVA with its processor."""
    assistant = load_vlm(checkpoint)
    llava = as_llava(assistant)
    check_same_logits(assistant, llava)
    os.makedirs(out, exist_ok=True)
    llava.save_pretrained(out)
    llava_processor(assistant, llava.config).save_pretrained(out)
