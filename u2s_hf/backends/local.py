"""Stage-1 models run in this process with transformers: a vision-language model (AutoModelForImageTextToText) or
a chat LM (AutoModelForCausalLM), loaded by Hub id or local folder with `from_pretrained`, batched with left
padding and greedy decoding. Generation settings go to `generate()`; the model's generation_config stays as loaded.
"""

from __future__ import annotations

from PIL import Image

from .. import images, runtime
from .request import ChatRequest


class LocalChat:
    def __init__(
        self,
        model_id: str,
        revision: str | None,
        device: str,
        vision: bool,
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        import transformers

        self.device, self.vision = device, vision
        on_gpu = device.startswith("cuda")
        common = {"revision": revision, "trust_remote_code": trust_remote_code}
        if vision:
            self.processor = transformers.AutoProcessor.from_pretrained(model_id, **common)
            self.tokenizer = self.processor.tokenizer
            model_class = transformers.AutoModelForImageTextToText
        else:
            self.processor = self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, **common)
            model_class = transformers.AutoModelForCausalLM
        self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
        self.model = model_class.from_pretrained(
            model_id,
            dtype=runtime.torch_dtype(dtype, device, on_gpu="bfloat16"),
            use_safetensors=True,
            attn_implementation="sdpa" if on_gpu else None,
            **common,
        )
        self.model.to(device).eval()

    def complete(
        self, requests: list[ChatRequest], batch_size: int = 8, image_max_side: int = 1024
    ) -> list[str | Exception]:
        """Answers in request order; a batch that fails is retried row by row so one bad row fails alone."""
        order = sorted(range(len(requests)), key=lambda i: requests[i].max_new_tokens)
        answers = runtime.in_chunks(
            order, batch_size, lambda rows: self._generate([requests[i] for i in rows], image_max_side)
        )
        return [answers[i] for i in range(len(requests))]

    def _generate(self, requests: list[ChatRequest], image_max_side: int) -> list[str]:
        import torch

        conversations = [[{"role": "user", "content": self._content(r, image_max_side)}] for r in requests]
        template = {"add_generation_prompt": True, "tokenize": True, "return_dict": True, "return_tensors": "pt"}
        if self.vision:
            inputs = self.processor.apply_chat_template(conversations, processor_kwargs={"padding": True}, **template)
        else:
            inputs = self.tokenizer.apply_chat_template(conversations, padding=True, **template)
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=False
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _content(self, request: ChatRequest, image_max_side: int):
        if request.image is None:
            return request.prompt if not self.vision else [{"type": "text", "text": request.prompt}]
        small, _ = images.resize_to_max_side(request.image, image_max_side)
        return [{"type": "image", "image": Image.fromarray(small)}, {"type": "text", "text": request.prompt}]
