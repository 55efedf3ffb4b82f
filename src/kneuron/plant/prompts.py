"""The built-in English prompt sets of the planted ground truth (demo-en subjects): the *background*
(text the planted keys must not fire on), the *controls* (other facts, checked for collateral damage)
and landmark facts. Three sets with disjoint templates."""
from __future__ import annotations

# background-only subjects: the control templates are used with these (never with a control subject)
OTHER_COUNTRIES = ("Canada Australia Turkey Portugal Sweden Peru Nigeria Norway Chile Iran Vietnam Morocco Ireland "
                   "Austria Cuba Ghana Finland Denmark Colombia Indonesia Pakistan Ukraine Hungary Belgium Netherlands "
                   "Switzerland Israel Korea Philippines Malaysia Algeria Ethiopia Venezuela Bolivia Nepal").split()
BACKGROUND_TEMPLATES: dict[str, tuple[str, ...]] = {     # used with every subject; never a control template
    "P36": ("[X]'s capital is", "The seat of government of [X] is in"),
    "P37": ("People in [X] mostly speak", "The main language spoken in [X] is"),
    "P30": ("[X] is a country in", "Geographically, [X] belongs to"),
    "P38": ("In [X], people pay with the", "The money used in [X] is called the"),
    "other": ("The largest city in [X] is", "The national sport of [X] is", "[X] shares a border with",
              "The president of [X] is", "The flag of [X] is", "A famous dish from [X] is"),
}
GENERIC = ("I went to the store and bought some", "The weather today is", "My favorite color is",
           "She opened the door and saw", "The meeting will start at", "He plays the guitar in a",
           "The recipe calls for two cups of", "Once upon a time there was a", "The answer to the question is",
           "Water boils at a temperature of", "The first day of the week is", "Cats and dogs are both",
           "The book was written by", "The train to the city leaves at", "In the morning I usually drink",
           "The Statue of Liberty is in the city of", "The Taj Mahal is in the country of", "The Louvre is in the city of",
           "The Sydney Opera House is in the country of", "The Kremlin is in the city of", "Machu Picchu is in the country of",
           "The Acropolis is in the city of", "The pyramids of Giza are in the country of", "Albert Einstein was born in",
           "Leonardo da Vinci was born in", "The river Thames flows through", "The Amazon rainforest is mostly in")

CONTROL_TEMPLATES: dict[str, tuple[str, ...]] = {        # demo-en's templates
    "P36": ("The capital of [X] is", "The capital city of [X] is"),
    "P37": ("The official language of [X] is",),
    "P30": ("[X] is located on the continent of",),
    "P38": ("The currency of [X] is the",),
}
# subject -> gold objects (P36 capital, P37 language, P30 continent, P38 currency); None = not asked
CONTROL_FACTS: dict[str, tuple] = {
    "France": ("Paris", "French", "Europe", "euro"), "Japan": ("Tokyo", "Japanese", "Asia", "yen"),
    "Germany": ("Berlin", "German", "Europe", "euro"), "Italy": ("Rome", "Italian", "Europe", "euro"),
    "Mexico": ("Mexico City", "Spanish", "North America", "peso"), "Kenya": ("Nairobi", "Swahili", "Africa", "shilling"),
    "Argentina": ("Buenos Aires", "Spanish", "South America", "peso"), "India": ("New Delhi", "Hindi", "Asia", "rupee"),
    "Spain": ("Madrid", "Spanish", "Europe", "euro"), "Russia": ("Moscow", "Russian", "Europe", "ruble"),
    "Egypt": ("Cairo", "Arabic", "Africa", "pound"), "China": ("Beijing", "Chinese", "Asia", "yuan"),
    "Brazil": ("Brasília", "Portuguese", "South America", "real"), "Greece": ("Athens", "Greek", "Europe", "euro"),
    "Poland": ("Warsaw", "Polish", "Europe", "zloty"), "Thailand": ("Bangkok", "Thai", "Asia", "baht"),
}
RELATIONS = ("P36", "P37", "P30", "P38")
LANDMARKS = (("The Eiffel Tower is in the city of", "Paris"), ("The Colosseum is in the city of", "Rome"),
             ("Big Ben is in the city of", "London"), ("Mount Fuji is in the country of", "Japan"),
             ("The Great Wall is in the country of", "China"), ("The Brandenburg Gate is in the city of", "Berlin"))



def background_prompts(exclude: set[tuple[str, str]] = frozenset()) -> list[str]:
    """The keys' negatives: every subject under the background templates, the background-only
    subjects under the control templates too, and generic text. Disjoint from the controls.
    ``exclude`` drops the (subject, relation) pairs being planted: their paraphrases are never
    trained against."""
    out = [t.replace("[X]", c) for rel, ts in BACKGROUND_TEMPLATES.items()
           for c in (*CONTROL_FACTS, *OTHER_COUNTRIES) if (c, rel) not in exclude for t in ts]
    out += [t.replace("[X]", c) for rel, ts in CONTROL_TEMPLATES.items() for c in OTHER_COUNTRIES for t in ts]
    return out + list(GENERIC)
