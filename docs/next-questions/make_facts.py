"""The English facts of the consistency study: en-zh's English facts of five relations, two each (the first two
in file order), its own templates and then its relation's ParaRel paraphrases, those that end in [Y] only (at most 4), so that
every fact has several queries a causal model can answer. Run from the project root:
    .venv/bin/python docs/next-questions/make_facts.py > docs/next-questions/facts-en-paraphrased.jsonl"""
import json
from collections import defaultdict

from kneuron.facts import load_facts

RELATIONS, PER_RELATION, MAX_TEMPLATES = ("P17", "P30", "P36", "P103", "P364"), 2, 4
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
