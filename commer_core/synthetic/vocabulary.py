"""The synthetic users' vocabulary: fact pools, style families and templates, split into train and held-out.

Pure data (no logic) so the generator in :mod:`commer_core.synthetic` stays readable; the
TRAIN / HELDOUT split of every pool is what makes dev and test users unseen kinds of users.
"""

from __future__ import annotations

from typing import Any

TRAIN, HELDOUT = "train", "heldout"

FACT_POOLS: dict[str, dict[str, list[str]]] = {
    TRAIN: {
        "city": ["Lisbon", "Denver", "Osaka", "Nairobi", "Toronto", "Glasgow", "Austin", "Perth", "Bergen", "Quito",
                 "Porto", "Tucson", "Leeds", "Hanoi", "Bologna", "Calgary", "Seville", "Krakow", "Busan", "Adelaide"],
        "pet_kind": ["dog", "cat", "rabbit", "parrot", "hamster"],
        "pet_name": ["Biscuit", "Mochi", "Kiwi", "Rocket", "Pepper", "Clover", "Noodle", "Luna", "Ziggy", "Sheldon",
                     "Waffles", "Pickle", "Bean", "Maple", "Otis", "Juno"],
        "team": ["Falcons", "Tigers", "Rovers", "Comets", "Wolves", "Mariners", "Hornets", "Pilots", "Bulldogs",
                 "Sharks", "Rangers", "Owls"],
        "food": ["ramen", "tacos", "pho", "pizza", "falafel", "sushi", "curry", "dumplings", "pancakes", "paella",
                 "lasagna", "burritos", "gnocchi", "kimchi"],
        "hobby": ["running", "painting", "chess", "gardening", "climbing", "baking", "cycling", "knitting",
                  "photography", "surfing", "pottery", "yoga"],
        "job": ["nurse", "barista", "baker", "teacher", "plumber", "chef", "librarian", "dentist", "carpenter",
                "mechanic"],
        "sib_name": ["Maya", "Leo", "Priya", "Sam", "Nina", "Omar", "Tess", "Jonah", "Greta", "Kai", "Rosa", "Felix"],
    },
    HELDOUT: {
        "city": ["Valparaiso", "Tbilisi", "Reykjavik", "Marrakesh", "Winnipeg", "Ljubljana", "Cusco", "Tallinn",
                 "Dunedin", "Kyoto"],
        "pet_kind": ["ferret", "tortoise", "gecko"],
        "pet_name": ["Pumpernickel", "Tofu", "Bramble", "Nacho", "Saffron", "Gizmo", "Marble", "Fennel"],
        "team": ["Herons", "Badgers", "Lynx", "Vipers", "Stallions", "Otters"],
        "food": ["bibimbap", "pierogi", "tagine", "ceviche", "jollof", "shakshuka", "laksa"],
        "hobby": ["fencing", "birdwatching", "archery", "calligraphy", "kayaking", "origami"],
        "job": ["welder", "florist", "paramedic", "tailor", "beekeeper"],
        "sib_name": ["Anouk", "Tariq", "Zofia", "Emeka", "Liesel", "Rafe"],
    },
}
SIB_RELATIONS = ["sister", "brother", "cousin"]
# Extra TRAIN fact values, used only with ``wide_train_facts``: a training set whose fact values are too many
# to memorise one by one, so a compressor must learn to carry whatever value a user's documents name (the
# held-out values are never in here; a test checks it).
WIDE_TRAIN_FACTS: dict[str, list[str]] = {
    "city": ["Madrid", "Oslo", "Dublin", "Chicago", "Boston", "Seattle", "Melbourne", "Auckland", "Cairo", "Lima",
             "Bogota", "Santiago", "Havana", "Montreal", "Vancouver", "Helsinki", "Stockholm", "Copenhagen", "Prague",
             "Vienna", "Budapest", "Warsaw", "Athens", "Istanbul", "Mumbai", "Jakarta", "Manila", "Seoul", "Taipei",
             "Bangkok", "Dakar", "Accra", "Lagos", "Tunis", "Naples", "Munich", "Hamburg", "Lyon", "Geneva", "Cardiff"],
    "pet_kind": ["goldfish", "hedgehog", "chinchilla", "canary", "iguana", "snake", "budgie", "rat", "mouse", "pony",
                 "goat", "duck", "axolotl", "lizard", "pigeon"],
    "pet_name": ["Poppy", "Rusty", "Shadow", "Smokey", "Ginger", "Coco", "Nala", "Simba", "Milo", "Oscar", "Teddy",
                 "Bailey", "Daisy", "Rosie", "Winston", "Chester", "Baxter", "Dexter", "Frankie", "Gus", "Hazel",
                 "Iggy", "Jasper", "Loki", "Pippin", "Quincy", "Rocco", "Sprout", "Uno", "Vinnie", "Wally", "Yoshi",
                 "Zelda", "Barnaby", "Dorian", "Domino", "Echo", "Fudge", "Gatsby", "Horatio"],
    "team": ["Eagles", "Bears", "Lions", "Panthers", "Hawks", "Ravens", "Jets", "Kings", "Knights", "Giants", "Titans",
             "Raiders", "Thunder", "Lightning", "Wildcats", "Cougars", "Coyotes", "Dolphins", "Sparrows", "Foxes",
             "Bisons", "Pirates", "Vikings", "Spartans", "Meteors", "Bandits", "Cyclones", "Gators", "Jaguars", "Pumas",
             "Condors", "Ospreys", "Kestrels", "Mustangs", "Broncos", "Stingrays", "Barracudas", "Grizzlies", "Moose",
             "Hurricanes"],
    "food": ["burgers", "lentils", "risotto", "tapas", "empanadas", "pakoras", "biryani", "goulash", "moussaka",
             "souvlaki", "churros", "crepes", "udon", "tempura", "enchiladas", "hummus", "couscous", "fondue",
             "schnitzel", "satay", "rendang", "adobo", "pupusas", "arepas", "poutine", "paneer", "kebabs", "meatballs",
             "ravioli", "polenta", "focaccia", "borscht", "dim sum", "bao", "congee", "okonomiyaki", "gumbo",
             "jambalaya", "chowder", "tortellini"],
    "hobby": ["swimming", "hiking", "skiing", "skating", "dancing", "singing", "drumming", "sewing", "woodworking",
              "fishing", "bowling", "tennis", "golf", "boxing", "rowing", "sailing", "juggling", "podcasting",
              "blogging", "gaming", "sketching", "sculpting", "crochet", "embroidery", "quilting", "stargazing",
              "skateboarding", "snowboarding", "diving", "volleyball", "basketball", "badminton", "pilates",
              "meditation", "camping", "fishkeeping", "puzzles", "karaoke", "beatboxing", "geocaching"],
    "job": ["aviator", "lawyer", "architect", "electrician", "cashier", "waiter", "accountant", "pharmacist", "farmer",
            "firefighter", "vet", "engineer", "programmer", "designer", "journalist", "courier", "butcher",
            "hairdresser", "tutor", "receptionist", "lifeguard", "zookeeper", "bartender", "surgeon", "optician",
            "translator", "editor", "banker", "janitor", "roofer", "glazier", "locksmith", "midwife", "curator",
            "geologist", "chemist", "postman", "sommelier", "jeweller", "cartographer"],
    "sib_name": ["Anna", "Ben", "Clara", "David", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Max",
                 "Nora", "Oliver", "Pia", "Rohan", "Sara", "Theo", "Uma", "Victor", "Wendy", "Yara", "Zane", "Amir",
                 "Bruno", "Cleo", "Dario", "Elif", "Farid", "Hana", "Ivan", "Jade", "Kofi", "Lucia", "Marco", "Noor",
                 "Otto", "Ruby", "Soren", "Tomas"],
}

# feature -> pool -> family -> wordings. Abbreviation wordings are (word, short form) pairs.
STYLE_FAMILIES: dict[str, dict[str, dict[str, list[Any]]]] = {
    "abbrev": {
        TRAIN: {"texting": [("you", "u"), ("are", "r"), ("to", "2"), ("for", "4")],
                "shortcuts": [("and", "&"), ("with", "w/"), ("at", "@"), ("because", "bc")]},
        HELDOUT: {"slang": [("the", "da"), ("this", "dis"), ("that", "dat"), ("going to", "gonna")]},
    },
    "exclaim": {TRAIN: {"bang": ["!", "!!"], "quizzical": ["?!", "!?"]}, HELDOUT: {"mega": ["!!!", "!!!!!"]}},
    "opener": {
        TRAIN: {"hype": ["omg", "OMG", "no way,", "wow,"], "candid": ["honestly,", "not gonna lie,", "tbh", "real talk:"],
                "newsy": ["update:", "quick update:", "fyi", "news:"],
                "greeting": ["hey friends,", "morning all,", "hi everyone,", "hello hello,"],
                "weary": ["ugh,", "sigh,", "meh,", "welp,"], "musing": ["so,", "ok so", "anyway,", "right,"]},
        HELDOUT: {"dramatic": ["breaking:", "plot twist:", "alert:", "big news:"],
                  "cheerful": ["yay!", "woohoo,", "yippee,", "hooray,"]},
    },
    "casing": {TRAIN: {"quiet": ["lower", "lower_nopunct"], "loud": ["shout_first", "shout_longest"]},
               HELDOUT: {"headline": ["title", "title_smart"]}},
    "closer": {
        TRAIN: {"smiley": [":)", ":D", "(:", "=)"], "laugh": ["lol", "haha", "lmao", "hehe"],
                "trail": ["...", "..", "…"], "heart": ["<3", "xoxo", "<33"]},
        HELDOUT: {"shrug": ["idk", "whatever", "¯\\_(ツ)_/¯"], "sparkle": ["✨", "*sparkles*", "✨✨"]},
    },
    "hashtag": {
        TRAIN: {"mood": ["#goodvibes", "#mood", "#vibes"], "life": ["#lifeupdate", "#dailylife", "#reallife"],
                "weekend": ["#weekend", "#sundayfunday", "#saturdayvibes"],
                "blessed": ["#blessed", "#grateful", "#thankful"]},
        HELDOUT: {"honest": ["#nofilter", "#truestory", "#noregrets"], "hustle": ["#grind", "#hustle", "#nodaysoff"]},
    },
    "signoff": {
        TRAIN: {"farewell": ["peace", "peace out", "later all"], "initials": ["- {initial}", "~{initial}", "-{initial}."],
                "cheers": ["cheers", "cheers all", "ta"]},
        HELDOUT: {"radio": ["over and out", "/end", "end transmission"], "love": ["love ya", "hugs", "much love"]},
    },
}
# Extra TRAIN style families, used only with ``wide_train_styles``: so many kinds of writing habit per feature
# that a compressor cannot learn each family as a class and must carry whatever wording a user's documents
# show, which is what held-out kinds of users need (no family name or wording is held out; a test checks it).
# Casing wordings are modes of ``_casing``.
WIDE_TRAIN_STYLES: dict[str, dict[str, list[Any]]] = {
    "abbrev": {"contractions": [("I am", "I'm"), ("cannot", "can't"), ("do not", "don't"), ("is not", "isn't")],
               "numeric": [("before", "b4"), ("great", "gr8"), ("tonight", "2nite"), ("one", "1")],
               "clipped": [("today", "2day"), ("about", "abt"), ("again", "agn"), ("new", "nu")],
               "phonetic": [("my", "mah"), ("what", "wut"), ("your", "ur"), ("night", "nite")]},
    "exclaim": {"tilde": ["~", "~~"], "wonder": ["?", "??"], "gasp": [" :O", " 0_0"], "ones": ["!1", "!!1"]},
    "opener": {"excited": ["guess what,", "get this:", "so excited,"], "sleepy": ["yawn,", "zzz", "too early,"],
               "shy": ["um,", "uh,", "erm,"], "notice": ["PSA:", "reminder:", "note to self:"],
               "soft": ["aww,", "aw,", "d'aww,"], "grumpy": ["seriously,", "come on,", "why,"],
               "pondering": ["random thought:", "shower thought:", "fun fact:"],
               "storyteller": ["once again,", "as usual,", "like clockwork,"]},
    "casing": {"allcaps": ["upper", "upper_nopunct"], "bare": ["nopunct", "nocap"]},
    "closer": {"wink": [";)", ";D", ";-)"], "cool": ["B)", "8)", "😎"], "grumble": ["smh", "fml", "oof"],
               "tears": [":'(", "T_T", ":("], "cheer": ["yeet", "woot", "boom"], "fire": ["🔥", "💯", "🔥🔥"],
               "thumbs": ["👍", "👌", "✌️"], "okay": ["k", "ok", "kk"]},
    "hashtag": {"fitness": ["#fitlife", "#gains", "#motivation"], "throwback": ["#tbt", "#throwback", "#memories"],
                "cozy": ["#cozy", "#hygge", "#homebody"], "funny": ["#fun", "#lol", "#funny"],
                "happy": ["#love", "#happy", "#smile"], "hometown": ["#citylife", "#local", "#hometown"],
                "weekday": ["#mondays", "#midweek", "#fridayfeeling"], "musing": ["#random", "#thoughts", "#justsaying"]},
    "signoff": {"bye": ["bye!", "bye for now", "byeee"], "night": ["night all", "nighty night", "sleep well"],
                "ttyl": ["ttyl", "talk soon", "catch ya"], "marked": ["-- {initial}", "xx {initial}", "{initial} out"],
                "care": ["stay safe", "take care", "be well"], "signed": ["yours, {initial}", "signed, {initial}",
                                                                        "from {initial}"]},
}
# Order of application: word-level changes first, casing over opener + body, then the appended marks.
FEATURES = ["abbrev", "exclaim", "opener", "casing", "closer", "hashtag", "signoff"]
SMALL_WORDS = {"a", "an", "the", "of", "in", "on", "to", "and", "at", "for", "with", "is"}

# Slot -> (generic words in the neutral input, phrasings of the user's fact), per task.
SLOTS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "lamp7": {
        "pet": ("my pet", ["my {pet_kind} {pet_name}", "{pet_name} (my {pet_kind})", "{pet_name} the {pet_kind}",
                           "{pet_name}"]),
        "city": ("my city", ["{city}", "good old {city}", "{city} (home)", "my beloved {city}"]),
        "team": ("my team", ["the {team}", "my {team}", "our {team}"]),
        "food": ("my favourite food", ["{food}", "some {food}", "a plate of {food}"]),
        "hobby": ("my hobby", ["{hobby}", "my beloved {hobby}", "{hobby} (my thing)"]),
        "job": ("my job", ["my {job} job", "my job as a {job}", "the {job} gig"]),
        "sib": ("my sibling", ["my {sib_rel} {sib_name}", "{sib_name} (my {sib_rel})", "{sib_name}"]),
    },
    "lamp4": {
        "city": ("the city", ["{city}"]),
        "team": ("the local team", ["the {team}", "{team}"]),
        "food": ("a local dish", ["{food}"]),
        "hobby": ("a popular pastime", ["{hobby}"]),
        "pets": ("pets", ["{pet_kind}s"]),
    },
}

# LaMP-7: one string per tweet; slots become generic words (input) or the user's facts (target).
TWEETS: list[str] = [
    "{pet} woke me up at six again.", "Took {pet} for a long walk before work.",
    "Traffic in {city} is terrible this morning.", "The weather in {city} is finally nice.",
    "{team} won the game last night and I am still shouting.", "Cannot believe {team} lost again.",
    "Having {food} for dinner tonight.", "Found a new place in {city} that serves {food}.",
    "Spent the whole weekend on {hobby}.", "Signed up for a class on {hobby} at the community center.",
    "{pet} stole {food} right off the table.", "Watching {team} play with {pet} on the sofa.",
    "Best day off ever, {hobby} all afternoon in {city}.", "Nothing beats {food} after a long day.",
    "Bought a present for {pet} today.", "Got tickets to see {team} play next week.",
    "Rain all day in {city} again.", "Trying to teach my friends {hobby}, wish me luck.",
    "Cooked {food} from scratch for the first time.", "{pet} is sleeping on my keyboard, send help.",
    "Early morning in {city}, coffee in hand.", "{team} have a new coach and I have opinions.",
    "Three hours of {hobby} and I am exhausted.", "Ordered {food} twice this week, no regrets.",
    "Long shift at {job} today, my feet hurt.", "{job} was chaos today but we made it.",
    "Called {sib} for an hour and we laughed the whole time.", "{sib} is visiting {city} this weekend.",
    "Made {food} for {sib} and they loved it.", "{sib} beat me at {hobby} again.",
    "Finally a day off from {job}, time for {hobby}.", "Told everyone at {job} about {team}, they are tired of me.",
    "{pet} and I are watching the rain.", "Is it just me or is {city} extra busy today?",
    "Packed {food} for lunch and it was the highlight of the day.", "Do you ever just think about {food}? Because I do.",
    "New personal best at {hobby} this morning.", "{team} play at home tonight, you know where I will be.",
    "Sunset over {city} is unreal right now.", "{pet} learned a new trick and I am so proud.",
    "The people at {job} asked for my recipe for {food}.", "Booked a trip for {sib} and me, cannot wait.",
    "{sib} sent me a photo of {pet} and made my day.", "Thinking about quitting {job} to do {hobby} full time.",
    "Anyone in {city} want to join me for {hobby}?", "Lost my voice cheering for {team}.",
    "The vet says {pet} is perfectly healthy, what a relief.", "{food} in {city} is the best you will ever have.",
    "Cleaned the whole flat and {pet} messed it up in five minutes.", "Wearing a jersey for {team} and I am ready.",
    "Rainy Sunday, {food} and a movie with {sib}.", "Got home from {job} and {pet} was waiting at the door.",
    "This week at {job} was a lot, thanks for asking.", "Moved to {city} three years ago today.",
    "{hobby} at sunrise is the best way to start the day.", "The neighbors in {city} are the best, they brought me {food}.",
    "Taught {sib} a bit of {hobby} and they are hooked.", "Bought new gear for {hobby} and my wallet is crying.",
    "Fell asleep before {team} scored, classic me.", "{sib} thinks {team} are overrated, we are not speaking.",
    "That moment when {food} arrives at your table.", "Snow in {city}, {pet} has never seen anything like it.",
    "Studying for a certificate for {job} this month, so tired.", "Reading about {hobby} at the library for hours.",
]

# LaMP-4: (article, headline); the article is the input, the headline the target.
ARTICLES: list[tuple[str, str]] = [
    ("Officials in {city} announced a plan to expand public parks over the next five years.",
     "{city} unveils five-year plan to expand parks"),
    ("{team} secured a narrow victory on Saturday after a late goal in the final minutes.",
     "{team} edge rivals with late winner"),
    ("A new restaurant specialising in {food} opened downtown in {city} this week to long queues.",
     "Long queues as new {food} spot opens in {city}"),
    ("Interest in {hobby} has doubled among young adults, according to a national survey.",
     "Survey finds {hobby} popularity doubling among young adults"),
    ("Animal shelters in {city} report record adoptions of {pets} this spring.", "{city} shelters see record {pets} adoptions"),
    ("{team} announced the signing of a veteran coach ahead of the new season.", "{team} sign veteran coach before new season"),
    ("Heavy rain caused flooding across parts of {city} on Monday, closing several roads.", "Flooding closes roads across {city}"),
    ("A festival celebrating {food} will return to {city} next month after a two-year break.", "{food} festival returns to {city}"),
    ("Vets warn owners of {pets} about a rise in summer heatstroke cases.", "Vets issue heat warning for {pets}"),
    ("A club devoted to {hobby} has opened its doors to beginners of all ages.", "New {hobby} club welcomes beginners"),
    ("Supporters of {team} queued overnight for tickets to the final home game.", "Fans queue overnight to see {team}"),
    ("The price of {food} has risen sharply this year because of poor harvests.", "{food} prices soar after poor harvests"),
    ("A study suggests that {hobby} may lower stress more than previously thought.", "Study links {hobby} to lower stress"),
    ("The council of {city} voted to add protected bike lanes on three major streets.", "{city} approves new protected bike lanes"),
    ("A local charity in {city} is training volunteers to foster {pets}.", "{city} charity seeks foster homes for {pets}"),
    ("{team} lost their third straight match on Sunday, raising questions about the coach.",
     "Pressure mounts as {team} slump continues"),
    ("A chef from {city} won a national award for a new take on {food}.", "{city} chef wins award for inventive {food}"),
    ("The national championship in {hobby} drew a record number of entrants this year.",
     "Record entries for national {hobby} championship"),
    ("The stadium where {team} play will be renovated over the summer.", "{team} stadium set for summer renovation"),
    ("Tourism in {city} reached a record high last year, officials said.", "{city} tourism hits record high"),
    ("A viral video of {pets} playing in the snow has been viewed millions of times.", "Video of {pets} in snow goes viral"),
    ("Schools in {city} will offer {hobby} as an after-school activity.", "{city} schools add {hobby} to after-school menu"),
    ("A cookbook devoted entirely to {food} has topped the bestseller list.", "{food} cookbook tops bestseller list"),
    ("{team} will hold an open training session for young fans next weekend.", "{team} open training to young fans"),
    ("Insurance claims for {pets} rose by a third in {city} last year.", "{city} insurance claims for {pets} jump"),
    ("Markets in {city} report that {food} is the best-selling street food.", "{food} tops {city} street food sales"),
]
