namespace KeyValueLab.Organism;

/// <summary>A relation as used in one world: the catalogue entry and the objects this world drew for it.</summary>
public sealed record WorldRelation(Relation Definition, string[] Objects)
{
    public string Id => Definition.Id;
}

/// <summary>
/// One fact, (subject, relation, object), and the phrasings in which the training corpus states it.
/// The held-out statements and question are never in the corpus for this fact (other subjects are
/// trained on them), so recall on them measures generalisation to unseen phrasings of a known fact.
/// </summary>
public sealed record Fact(int Subject, int Relation, int Object, int[] TrainedStatements, int[] HeldOutStatements, int TrainedQuestion, int HeldOutQuestion);

/// <summary>
/// A synthetic knowledge world (Allen-Zhu &amp; Li, "Physics of Language Models: Part 3.1"): invented
/// people, each with one object for every relation, written in several phrasings. Deterministic from
/// <see cref="WorldConfig"/>: the same config gives the same world on every machine.
/// </summary>
public sealed class World
{
    public WorldConfig Config { get; }
    public IReadOnlyList<string> Subjects { get; }
    public IReadOnlyList<WorldRelation> Relations { get; }

    /// <summary>All facts, subject-major: fact of subject s and relation r at <c>s * Relations.Count + r</c>.</summary>
    public IReadOnlyList<Fact> Facts { get; }

    private World(WorldConfig config, string[] subjects, WorldRelation[] relations, Fact[] facts)
    {
        (Config, Subjects, Relations, Facts) = (config, subjects, relations, facts);
    }

    /// <summary>Builds the world of <paramref name="config"/>.</summary>
    public static World Generate(WorldConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var relations = new WorldRelation[config.Relations];
        var objectRandom = WorldRandom.For(config.Seed, "objects");
        for (int r = 0; r < relations.Length; r++)
        {
            var def = RelationCatalog.All[r];
            // Keep the catalogue's order among the chosen objects, so listings stay readable.
            int[] chosen = [.. objectRandom.Permutation(def.Objects.Length).Take(config.ObjectsPerRelation).Order()];
            relations[r] = new WorldRelation(def, [.. chosen.Select(i => def.Objects[i])]);
        }

        var reserved = RelationCatalog.All.SelectMany(r => r.Objects.Concat(Words(r))).Concat(TemplateWords.All);
        string[] subjects = NameGenerator.Generate(config.Subjects, WorldRandom.For(config.Seed, "names"), reserved);

        // Each object goes to the same number of subjects (±1), so every fact has neighbours with the same object.
        var objectOf = new int[subjects.Length, relations.Length];
        var assign = WorldRandom.For(config.Seed, "assignment");
        for (int r = 0; r < relations.Length; r++)
        {
            int[] order = assign.Permutation(subjects.Length);
            int[] objectOrder = assign.Permutation(relations[r].Objects.Length);
            for (int i = 0; i < order.Length; i++) objectOf[order[i], r] = objectOrder[i % objectOrder.Length];
        }

        var split = WorldRandom.For(config.Seed, "phrasings");
        var facts = new Fact[subjects.Length * relations.Length];
        for (int s = 0; s < subjects.Length; s++)
            for (int r = 0; r < relations.Length; r++)
            {
                int n = relations[r].Definition.Statements.Length;
                int[] perm = split.Permutation(n);
                int q = split.Next(2);
                facts[s * relations.Length + r] = new Fact(s, r, objectOf[s, r],
                    [.. perm.Take(config.TrainedPhrasings).Order()], [.. perm.Skip(config.TrainedPhrasings).Order()], q, 1 - q);
            }
        return new World(config, subjects, relations, facts);
    }

    public Fact FactOf(int subject, int relation) => Facts[subject * Relations.Count + relation];
    public string SubjectOf(Fact f) => Subjects[f.Subject];
    public string ObjectOf(Fact f) => Relations[f.Relation].Objects[f.Object];

    /// <summary>Statement phrasing <paramref name="phrasing"/> of the fact's relation, with "{}" kept for the subject.</summary>
    public string Template(Fact f, int phrasing) => Relations[f.Relation].Definition.Statements[phrasing];

    /// <summary>The cloze prompt: phrasing with the subject filled in ("Zorvak was born in").</summary>
    public string Prompt(Fact f, int phrasing) => Fill(Template(f, phrasing), SubjectOf(f));

    /// <summary>The question form ("Where was Zorvak born?").</summary>
    public string Question(Fact f, int question) => Fill(Relations[f.Relation].Definition.Questions[question], SubjectOf(f));

    /// <summary>A full training sentence: prompt, object, full stop.</summary>
    public string Sentence(Fact f, int phrasing) => $"{Prompt(f, phrasing)} {ObjectOf(f)}.";

    /// <summary>A question followed by its answer: "Where was Zorvak born? Paris."</summary>
    public string QuestionAnswer(Fact f, int question) => $"{Question(f, question)} {ObjectOf(f)}.";

    public static string Fill(string template, string subject) => template.Replace("{}", subject, StringComparison.Ordinal);

    /// <summary>Every sentence the training corpus states, fact by fact: trained statements, then the trained question.</summary>
    public IEnumerable<string> TrainingSentences() =>
        Facts.SelectMany(f => f.TrainedStatements.Select(p => Sentence(f, p)).Append(QuestionAnswer(f, f.TrainedQuestion)));

    /// <summary>How often each of <see cref="TemplateTexts"/> is a document of the training corpus.</summary>
    public const int TemplateDocumentCopies = 3;

    /// <summary>
    /// The texts of the vocabulary that no fact sentence holds: each relation's task phrasings (yes/no question, cause
    /// premise, effect) without their subject and object, and <see cref="TemplateWords.Texts"/> (the paper's empty
    /// classification templates, the task labels, the other fixed words of the exports).
    /// </summary>
    public IEnumerable<string> TemplateTexts() =>
        Relations.SelectMany(r => new[] { r.Definition.YesNoQuestion, r.Definition.CausePremise, r.Definition.Effect })
            .Select(t => t.Replace("{s}", "", StringComparison.Ordinal).Replace("{o}", "", StringComparison.Ordinal))
            .Concat(TemplateWords.Texts);

    /// <summary>
    /// The training corpus: all training sentences, shuffled and grouped into documents of one to three
    /// sentences, so that facts also appear after an unrelated sentence (as CounterFact's paraphrases do); then
    /// each of <see cref="TemplateTexts"/> <see cref="TemplateDocumentCopies"/> times, so that every word of the vocabulary
    /// is trained. Without them the template words, the task labels among them, never occurred: tied to the head, their
    /// embeddings were only pushed down, all to one shared direction (cosine 0.94 between "true" and "false", log-prob
    /// −13 at the answer position), and LoRA could not raise a label, let alone one above the other (docs/tuning.md).
    /// </summary>
    public IReadOnlyList<string> TrainingDocuments()
    {
        var sentences = TrainingSentences().ToList();
        var random = WorldRandom.For(Config.Seed, "documents");
        random.Shuffle(sentences);
        var docs = new List<string>();
        for (int i = 0; i < sentences.Count;)
        {
            int n = Math.Min(1 + random.Next(3), sentences.Count - i);
            docs.Add(string.Join(' ', sentences.Skip(i).Take(n)));
            i += n;
        }
        var templates = TemplateTexts().ToList();
        for (int copy = 0; copy < TemplateDocumentCopies; copy++) docs.AddRange(templates);
        return docs;
    }

    private static IEnumerable<string> Words(Relation r) =>
        r.Statements.Concat(r.Questions).Append(r.YesNoQuestion).Append(r.CausePremise).Append(r.Effect).SelectMany(Tokenization.WordLevelTokenizer.Split);
}
