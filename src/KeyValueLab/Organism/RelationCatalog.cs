namespace KeyValueLab.Organism;

/// <summary>
/// One kind of fact about a subject: its phrasings, questions and the real words its objects are drawn from.
/// Every template holds "{}" for the subject; statements and questions end where the object follows.
/// </summary>
/// <param name="Id">Wikidata property id (as CounterFact's <c>relation_id</c>).</param>
/// <param name="Name">Short English name, e.g. "place of birth".</param>
/// <param name="Statements">Cloze phrasings (≥ 8): "{} was born in" → " Paris".</param>
/// <param name="Questions">Two question forms (zsRE <c>src</c> and <c>rephrase</c>): "Where was {} born?".</param>
/// <param name="YesNoQuestion">A BoolQ-style question with "{s}" and "{o}": "was {s} born in {o}".</param>
/// <param name="CausePremise">A COPA-style premise with "{s}" whose effect depends on this fact.</param>
/// <param name="Effect">The effect sentence with "{s}" and "{o}".</param>
/// <param name="Objects">Candidate objects: single words, each one token.</param>
public sealed record Relation(
    string Id, string Name, string[] Statements, string[] Questions,
    string YesNoQuestion, string CausePremise, string Effect, string[] Objects);

/// <summary>The relations a world draws from, in order; a world with R relations uses the first R.</summary>
public static class RelationCatalog
{
    private static readonly string[] Cities =
        ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo",
         "Athens", "Cairo", "Tokyo", "Lima", "Sydney", "Toronto", "Chicago", "Mumbai", "Seoul", "Nairobi"];

    /// <summary>All twelve relations; the default world uses the first ten.</summary>
    public static IReadOnlyList<Relation> All { get; } =
    [
        new("P19", "place of birth",
            ["{} was born in", "The birthplace of {} is", "{} is originally from the city of", "{} came into the world in",
             "The city where {} was born is", "{}'s place of birth is", "{} was born and raised in", "The hometown of {} is"],
            ["Where was {} born?", "In which city was {} born?"],
            "was {s} born in {o}", "{s} travelled back to the city where {s} was born.", "{s} arrived in {o}.", Cities),
        new("P27", "country of citizenship",
            ["{} is a citizen of", "{} holds citizenship of", "The country of citizenship of {} is", "{} carries a passport from",
             "{} is a national of", "{}'s nationality is that of", "The passport of {} was issued by", "{} has the citizenship of"],
            ["Which country is {} a citizen of?", "What is the nationality of {}?"],
            "is {s} a citizen of {o}", "{s} flew home to the country of {s}'s citizenship.", "{s} landed in {o}.",
            ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Kenya", "Mexico", "Norway", "Peru",
             "Chile", "Spain", "Italy", "Germany", "Sweden", "Poland", "Turkey", "Greece", "Vietnam", "Argentina"]),
        new("P103", "native language",
            ["The native language of {} is", "{}'s mother tongue is", "{} grew up speaking", "The first language of {} is",
             "{} speaks natively", "As a child, {} spoke", "{} learned to talk in", "The language {} spoke at home was"],
            ["What is the native language of {}?", "Which language did {} grow up speaking?"],
            "is the native language of {s} {o}", "{s} wrote a letter in {s}'s mother tongue.", "The letter was written in {o}.",
            ["French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Swedish", "Polish", "Greek", "Turkish",
             "Arabic", "Hindi", "Japanese", "Korean", "Russian", "Finnish", "Danish", "Czech", "Hungarian", "Welsh"]),
        new("P106", "occupation",
            ["{} works as a", "By profession, {} is a", "{} earns a living as a", "The occupation of {} is",
             "{}'s job is being a", "{} is employed as a", "Professionally, {} is a", "{} trained to become a"],
            ["What is the occupation of {}?", "What does {} do for a living?"],
            "does {s} work as a {o}", "{s} went to work early in the morning.", "{s} spent the day working as a {o}.",
            ["doctor", "lawyer", "teacher", "banker", "pilot", "chef", "nurse", "journalist", "painter", "sailor",
             "dentist", "librarian", "farmer", "plumber", "surgeon", "carpenter", "photographer", "baker", "tailor", "judge"]),
        new("P1303", "instrument",
            ["{} plays the", "The instrument {} plays is the", "{} is a performer on the", "{} practises every day on the",
             "{}'s instrument is the", "On stage, {} plays the", "{} performs music on the", "The musical instrument of {} is the"],
            ["Which instrument does {} play?", "What instrument is {} known for playing?"],
            "does {s} play the {o}", "{s} gave a concert last night.", "{s} played the {o} on stage.",
            ["piano", "violin", "guitar", "cello", "flute", "trumpet", "drums", "harp", "clarinet", "saxophone",
             "banjo", "oboe", "accordion", "trombone", "mandolin", "harmonica", "bassoon", "ukulele", "tuba", "organ"]),
        new("P641", "sport",
            ["{} plays the sport of", "The sport {} plays is", "{} competes professionally in", "{}'s favourite sport is",
             "{} trains every week for", "{} is a professional player of", "The game that {} plays is", "{} became famous for playing"],
            ["Which sport does {} play?", "What sport is {} known for?"],
            "does {s} play {o}", "{s} went to a match on Sunday.", "{s} played {o} all afternoon.",
            ["tennis", "football", "cricket", "rugby", "hockey", "baseball", "golf", "basketball", "volleyball", "badminton",
             "handball", "squash", "polo", "lacrosse", "softball", "netball", "curling", "snooker", "bowling", "croquet"]),
        new("P108", "employer",
            ["{} works for", "{} is employed by", "The employer of {} is", "{} has a job at",
             "{}'s employer is", "{} draws a salary from", "The company {} works for is", "Every morning {} goes to work at"],
            ["Which company does {} work for?", "Who is the employer of {}?"],
            "does {s} work for {o}", "{s} drove to the office on Monday.", "{s} arrived at the offices of {o}.",
            ["Google", "Microsoft", "Toyota", "Nokia", "Siemens", "Samsung", "Boeing", "Nestle", "Intel", "Sony",
             "IBM", "Honda", "Shell", "Adidas", "Philips", "Airbus", "Oracle", "Netflix", "Ikea", "Volvo"]),
        new("P462", "favourite colour",
            ["The favourite colour of {} is", "{}'s favourite colour is", "{} likes the colour", "The colour {} likes best is",
             "{} always dresses in", "{} painted every room", "The colour preferred by {} is", "{} prefers the colour"],
            ["What is the favourite colour of {}?", "Which colour does {} like best?"],
            "is the favourite colour of {s} {o}", "{s} painted the house in {s}'s favourite colour.", "The house became {o}.",
            ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "pink",
             "brown", "violet", "turquoise", "crimson", "beige", "maroon", "scarlet", "indigo", "silver", "gold"]),
        new("P69", "educated at",
            ["{} studied at", "{} is a graduate of", "{} earned a degree from", "The university {} attended is",
             "{}'s alma mater is", "{} went to university at", "{} was educated at", "The university that awarded {} a degree is"],
            ["Where did {} study?", "Which university did {} attend?"],
            "did {s} study at {o}", "{s} returned to the old university for a reunion.", "{s} visited {o}.",
            ["Oxford", "Cambridge", "Harvard", "Yale", "Stanford", "Princeton", "Columbia", "Cornell", "Berkeley", "Sorbonne",
             "Heidelberg", "Bologna", "Leiden", "Uppsala", "Edinburgh", "McGill", "Duke", "Caltech", "Dartmouth", "Salamanca"]),
        new("P101", "field of work",
            ["{} works in the field of", "The field of work of {} is", "{} is an expert in", "{} does research in",
             "{}'s field is", "{} has published many papers on", "The subject {} specialises in is", "{} is a specialist in"],
            ["What field does {} work in?", "What is the field of work of {}?"],
            "does {s} work in {o}", "{s} published a new paper.", "The paper was about {o}.",
            ["physics", "chemistry", "biology", "history", "economics", "geology", "astronomy", "linguistics", "philosophy", "mathematics",
             "medicine", "archaeology", "psychology", "botany", "zoology", "sociology", "ecology", "genetics", "statistics", "anthropology"]),
        new("P551", "residence",
            ["{} lives in", "{} resides in", "The city where {} lives is", "{}'s home is in",
             "{} has an apartment in", "These days {} lives in", "The residence of {} is in", "{} currently lives in"],
            ["Where does {} live?", "In which city does {} live?"],
            "does {s} live in {o}", "{s} took the train home after work.", "{s} got off the train in {o}.", Cities),
        new("P136", "favourite music genre",
            ["The favourite music genre of {} is", "{} mostly listens to", "{}'s favourite kind of music is", "{} is a fan of",
             "The music {} loves is", "{} collects records of", "{} goes to concerts of", "The genre {} prefers is"],
            ["Which music genre does {} like?", "What kind of music does {} prefer?"],
            "does {s} like {o}", "{s} turned on the radio.", "{s} listened to {o}.",
            ["jazz", "blues", "rock", "opera", "reggae", "funk", "folk", "techno", "salsa", "tango",
             "disco", "punk", "gospel", "soul", "country", "metal", "rap", "ska", "bluegrass", "flamenco"]),
    ];
}
