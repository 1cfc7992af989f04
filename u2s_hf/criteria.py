"""Privacy criteria: nine categories summarised from VISPR's attributes, and narrowing them for ablations."""

from __future__ import annotations

CATEGORIES: dict[str, str] = {
    "people": "faces, partial faces, skin in private contexts, tattoos, visible emotions",
    "appearance": "clothing or accessories that reveal gender, culture, religion, social status or role",
    "health": "casts, wheelchairs, bandages, medication, disability, illness or injury",
    "text and symbols": "signs, receipts, documents, screens, handwriting, licence plates, usernames, phone numbers",
    "locations and time": "homes, offices, bedrooms, classrooms, addresses, GPS marks, clocks, dates",
    "personal interactions": "families, friends, teams, small groups, protests, celebrations",
    "professional and school settings": "uniforms, tools, name tags, diplomas, workspaces, formal events",
    "cultural, political and religious identifiers": "flags, slogans, religious attire, ceremonies, posters",
    "private belongings and behaviour": "hobbies, personal photos, mail, social media, travel documents",
}


def criteria_text(criteria=None) -> str:
    """The criteria as prompt lines.

    `criteria` is None (all nine categories), a list of category names (a narrower set), or a mapping
    {name: description} of your own (e.g. a single criterion, as in the paper's ablation).
    """
    if criteria is None:
        chosen = CATEGORIES
    elif isinstance(criteria, dict):
        chosen = {str(k): str(v) for k, v in criteria.items()}
    elif criteria and all(isinstance(c, tuple) for c in criteria):  # frozen {name: description} pairs
        chosen = dict(criteria)
    else:
        names = [criteria] if isinstance(criteria, str) else list(criteria)
        unknown = [n for n in names if n not in CATEGORIES]
        if unknown:
            raise ValueError(
                f"unknown privacy criteria {unknown}; known: {', '.join(CATEGORIES)} "
                f"(or pass a dict {{name: description}} of your own)"
            )
        chosen = {n: CATEGORIES[n] for n in names}
    if not chosen:
        raise ValueError("at least one privacy criterion is needed")
    return "\n".join(f"- {name}: {description}" for name, description in chosen.items())
