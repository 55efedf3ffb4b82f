"""The English facts of the consistency study: en-zh's English facts of five relations, two each (the first two
in file order), its own templates and then its relation's ParaRel paraphrases, those that end in [Y] only (at most 4), so that
every fact has several queries a causal model can answer. Run from the project root:
    .venv/bin/python docs/next-questions/make_facts.py > docs/next-questions/facts-en-paraphrased.jsonl"""
import json
from collections import defaultdict

from kneuron.facts import load_facts

RELATIONS, PER_RELATION, MAX_TEMPLATES = ("P17", "P30", "P36", "P103", "P364"), 2, 4
def paraphrased() -> None:
    """The English facts with ParaRel paraphrases (the module doc)."""
    para = defaultdict(list)
    for f in load_facts("../shared/data/pararel"):
        if not para[f.relation]:
            para[f.relation] = [t for t in f.templates if t.rstrip(" .").endswith("[Y]")][:MAX_TEMPLATES]
    taken = defaultdict(int)
    for f in load_facts("en-zh"):
        if f.lang != "en" or f.relation not in RELATIONS or taken[f.relation] >= PER_RELATION:
            continue
        taken[f.relation] += 1
        templates = [t for t in dict.fromkeys([*f.templates, *para[f.relation]])
                     if t.rstrip(" .").endswith("[Y]")][:MAX_TEMPLATES]
        print(json.dumps({"id": f.id, "relation": f.relation, "lang": "en", "subject": f.subject, "object": f.object,
                          "templates": templates, "aliases": list(f.aliases), "wrong_objects": list(f.wrong_objects)},
                         ensure_ascii=False))


def bilingual(n_relations: int = 10, per_relation: int = 3) -> list[dict]:
    """The bilingual facts of the consistency study (gemma3-270m): en-zh's own templates, which carry several
    queries per fact in both languages; the first ``n_relations`` relations (file order) whose facts have two or
    more templates ending in [Y] in each language, and their first ``per_relation`` fact ids present in both.
    Run:  .venv/bin/python docs/next-questions/make_facts.py --bilingual > docs/next-questions/facts-en-zh-multi.jsonl"""
    usable = lambda f: [t for t in f.templates if t.rstrip(" .。").endswith("[Y]")]  # noqa: E731
    by = defaultdict(dict)
    for f in load_facts("en-zh"):
        by[(f.relation, f.id)][f.lang] = f
    rels = defaultdict(list)
    for (rel, fid), langs in by.items():
        if set(langs) >= {"en", "zh"} and all(len(usable(langs[x])) >= 2 for x in ("en", "zh")):
            rels[rel].append(fid)
    out = []
    for rel in [r for r in dict.fromkeys(r for r, _ in by) if len(rels[r]) >= per_relation][:n_relations]:
        for fid in rels[rel][:per_relation]:
            for lang in ("en", "zh"):
                f = by[(rel, fid)][lang]
                out.append({"id": f.id, "relation": f.relation, "lang": lang, "subject": f.subject, "object": f.object,
                            "templates": usable(f), "aliases": list(f.aliases), "wrong_objects": list(f.wrong_objects)})
    return out


if __name__ == "__main__":
    import sys
    if "--bilingual" in sys.argv[1:]:
        for r in bilingual():
            print(json.dumps(r, ensure_ascii=False))
    else:
        paraphrased()
