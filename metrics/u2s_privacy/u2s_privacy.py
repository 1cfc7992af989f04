"""u2s_privacy: what is left to link an anonymised image to its original (FaceSim, TextSim, race entropy,
VLMScore)."""

from typing import ClassVar

import evaluate

from u2s_hf import evaluation, metric_module
from u2s_hf.backends.chat import load_chat
from u2s_hf.judge_config import JudgeConfig
from u2s_hf.scoring.faces import load_face_model

_DESCRIPTION = """The privacy metrics of Unsafe2Safe (CVPR 2026) between each original and its anonymised image:
FaceSim (insightface embeddings: per original face, cosine to its best match in the anonymised image, pooled over
faces; lower is better) with the share of original faces that still have a face at their place (face_retention),
TextSim (text read from both images, rapidfuzz token_set_ratio / 100 after case and punctuation folding; lower is
better), race entropy of the apparent groups a judge
VLM lists in the anonymised images (normalised by log 5; higher = more diverse) and VLMScore (a judge VLM's 0-100
anonymisation score of the side-by-side pair; higher is better)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: anonymised images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: the original images, in the same order.
Settings (evaluate.load or compute): face_model (insightface pack, default "antelopev2"), face_root (folder holding
    models/<face_model>/), text_reader ("ocr": RapidOCR, offline; "judge": the judge VLM, the paper's way), judge (a
    VLM id, e.g. "OpenGVLab/InternVL3_5-8B-HF"; without one race entropy and VLMScore are None), judge_url (an
    OpenAI-compatible server serving the judge; default: load it in this process), text_normalize (default True:
    fold case and punctuation before TextSim, rapidfuzz's utils.default_process).
Returns:
    Every metric with <metric>_scored (items it is over) and <metric>_missing (items left out) beside it.
    face_similarity (pooled over original faces), face_similarity_scored (faces with a face to match),
    face_similarity_missing (faces with none, plus one per unreadable pair), face_retention (over faces_total),
    faces_total (faces in originals of readable pairs), face_unreadable (pairs with either image missing or
    undecodable: in no face number), text_similarity, text_similarity_scored, text_similarity_missing
    (text_excluded: pairs whose original has no text, plus text_unreadable: pairs with either image unreadable),
    race_entropy, race_entropy_scored / race_entropy_missing (images answered / not), race_counts, race_failed
    (requests failed or answers unreadable), race_unparsed (labels naming no group, not counted), vlm_score,
    vlm_score_scored, vlm_score_missing (vlm_unreadable: no readable score in the answer, plus
    vlm_image_unreadable: pairs never sent), skipped ({metric: why}), per_image. Without a judge the race and
    VLMScore numbers are None.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sPrivacy(metric_module.U2sMetric):
    SETTINGS: ClassVar[dict] = {
        "face_model": "antelopev2",
        "face_root": None,
        "text_reader": "ocr",
        "judge": None,
        "judge_url": None,
        "text_normalize": True,
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
            references,
            predictions,
            s["face_model"],
            s["face_root"],
            s["text_reader"],
            judge=_judge(s),
            text_normalize=s["text_normalize"],
        )


def _judge(settings) -> JudgeConfig | None:
    return JudgeConfig.named(settings["judge"], settings["judge_url"]) if settings["judge"] else None
