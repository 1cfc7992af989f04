"""u2s_privacy: what is left to link an anonymised image to its original (FaceSim, TextSim, race entropy,
VLMScore)."""

from typing import ClassVar

import evaluate

from u2s_hf import evaluation, metric_module
from u2s_hf.backends.chat import load_chat
from u2s_hf.judge_config import JudgeConfig
from u2s_hf.scoring.faces import load_face_model

_DESCRIPTION = """The privacy metrics of Unsafe2Safe (CVPR 2026) between each original and its anonymised image:
FaceSim (insightface embeddings: per original face, cosine to its best match in the anonymised image; lower is
better) with the share of original faces that still have a face at their place (face_retention), TextSim (text read
from both images, rapidfuzz token_set_ratio / 100; lower is better), race entropy of the apparent groups a judge
VLM lists in the anonymised images (normalised by log 5; higher = more diverse) and VLMScore (a judge VLM's 0-100
anonymisation score of the side-by-side pair; higher is better)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: anonymised images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: the original images, in the same order.
Settings (evaluate.load or compute): face_model (insightface pack, default "antelopev2"), face_root (folder holding
    models/<face_model>/), text_reader ("ocr": RapidOCR, offline; "judge": the judge VLM, the paper's way), judge (a
    VLM id, e.g. "OpenGVLab/InternVL3_5-8B-HF"; without one race entropy and VLMScore are None), judge_url (an
    OpenAI-compatible server serving the judge; default: load it in this process).
Returns:
    face_similarity, face_retention, text_similarity, text_excluded (pairs whose original has no text),
    text_unreadable, race_entropy, race_counts, vlm_score, vlm_unreadable, skipped ({metric: why}), per_image.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sPrivacy(metric_module.U2sMetric):
    SETTINGS: ClassVar[dict] = {
        "face_model": "antelopev2",
        "face_root": None,
        "text_reader": "ocr",
        "judge": None,
        "judge_url": None,
    }

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=evaluation.image_pair_features(),
        )

    def load_models(self, settings):
        load_face_model(settings["face_model"], settings["face_root"])
        judge = _judge(settings)
        if judge is not None:
            load_chat(judge)

    def _compute(self, predictions, references, **settings):
        s = self.settings_for(settings)
        return evaluation.privacy(
            references, predictions, s["face_model"], s["face_root"], s["text_reader"], judge=_judge(s)
        )


def _judge(settings) -> JudgeConfig | None:
    return JudgeConfig.named(settings["judge"], settings["judge_url"]) if settings["judge"] else None
