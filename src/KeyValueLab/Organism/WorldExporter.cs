using System.Text;
using System.Text.Json.Nodes;
using static KeyValueLab.Organism.WorldJson;

namespace KeyValueLab.Organism;

/// <summary>
/// Writes a world's datasets in the formats real data ships in, so every evaluator reads them like real data:
/// <list type="bullet">
/// <item><c>counterfact.json</c>: CounterFact, ROME's original schema (SPEC §2).</item>
/// <item><c>zsre_mend.json</c>: zsRE in MEND's format; <c>answers[0]</c> is the true object, <c>alt</c> another object.</item>
/// <item><c>tasks/{boolq,copa,cb}/{train,val,test}.jsonl</c>: classification by the kind of an object the prompt names
/// (is the last of three a place; which choice names what the premise says the subject plays; which of three kinds the
/// hypothesis names), in BoolQ, COPA and CB fields with balanced labels, read with the paper's prompt templates;
/// validation and test name objects the training rows do not.</item>
/// <item><c>datasets_version.txt</c>: <see cref="DatasetsVersion"/>, written last.</item>
/// <item><c>world.json</c> (facts, and per fact which phrasings were trained and which held out), <c>corpus.txt</c>
/// (the training corpus, one document a line), <c>README.md</c>.</item>
/// </list>
/// Everything is a pure function of the world, so the same seed gives byte-identical files.
/// </summary>
public static class WorldExporter
{
    public const string CounterFactFile = "counterfact.json";
    public const string ZsreFile = "zsre_mend.json";
    public const string WorldFile = "world.json";
    public const string CorpusFile = "corpus.txt";
    public const string TasksFolder = "tasks";
    public const string VersionFile = "datasets_version.txt";

    /// <summary>
    /// Bumped whenever a change of code changes the exported files without changing the organism's spec (the tasks, say), so
    /// that a cached organism's datasets are regenerated (<see cref="IsCurrent"/>) while its model, which does not depend on
    /// them, is kept. 2: the tasks ask for the kind of a named object (issue 10).
    /// </summary>
    public const string DatasetsVersion = "keyvaluelab-organism-datasets/2";

    /// <summary>Task folder names under <see cref="TasksFolder"/>.</summary>
    public static readonly string[] Tasks = ["boolq", "copa", "cb"];

    /// <summary>Writes every file into <paramref name="folder"/> (created if needed); returns the paths written.</summary>
    public static IReadOnlyList<string> Export(World world, string folder)
    {
        ArgumentNullException.ThrowIfNull(world);
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        void Json(string name, JsonNode node) { string p = Path.Combine(folder, name); WriteJson(p, node); written.Add(p); }

        Json(WorldFile, WorldDescription(world));
        string corpus = Path.Combine(folder, CorpusFile);
        WriteText(corpus, string.Concat(world.TrainingDocuments().Select(d => d + "\n")));
        written.Add(corpus);
        Json(CounterFactFile, new JsonArray([.. CounterFact(world)]));
        Json(ZsreFile, new JsonArray([.. Zsre(world)]));
        foreach (var (task, rows) in new[] { ("boolq", FactVerification(world)), ("copa", TwoChoice(world)), ("cb", Entailment(world)) })
            foreach (var (split, list) in new[] { ("train", rows.Train), ("val", rows.Val), ("test", rows.Test) })
            {
                string p = Path.Combine(folder, TasksFolder, task, split + ".jsonl");
                int idx = 0;
                WriteJsonLines(p, list.Select(r => { r["idx"] = idx++; return r; }));
                written.Add(p);
            }
        string readme = Path.Combine(folder, "README.md");
        WriteText(readme, Readme(world));
        written.Add(readme);
        string version = Path.Combine(folder, VersionFile);
        WriteText(version, DatasetsVersion + "\n");  // last: a folder with it is complete
        written.Add(version);
        return written;
    }

    /// <summary>Whether <paramref name="folder"/> holds a complete export of this version of the code.</summary>
    public static bool IsCurrent(string folder)
    {
        string version = Path.Combine(folder, VersionFile);
        return File.Exists(version) && File.ReadAllText(version).Trim() == DatasetsVersion;
    }

    /// <summary>Facts chosen for an export: relations taken in turn, facts within a relation in a seeded order.</summary>
    public static IEnumerable<Fact> ChooseFacts(World world, string purpose, int count)
    {
        var random = WorldRandom.For(world.Config.Seed, purpose);
        int r = world.Relations.Count;
        var perRelation = Enumerable.Range(0, r).Select(rel => world.Facts.Where(f => f.Relation == rel).ToArray()).ToArray();
        foreach (var list in perRelation) random.Shuffle(list);
        count = Math.Min(count, world.Facts.Count);
        for (int i = 0; i < count; i++) yield return perRelation[i % r][i / r];
    }

    /// <summary>CounterFact records (ROME's original schema).</summary>
    public static IEnumerable<JsonObject> CounterFact(World world)
    {
        var random = WorldRandom.For(world.Config.Seed, "counterfact-content");
        int caseId = 0;
        foreach (var fact in ChooseFacts(world, "counterfact", world.Config.CounterFactCases))
        {
            var rel = world.Relations[fact.Relation];
            int newObject = OtherObject(random, rel, fact.Object);
            int rewrite = random.Pick(fact.TrainedStatements);
            int[] held = [.. fact.HeldOutStatements];
            random.Shuffle(held);
            var paraphrases = held.Take(2).Select((p, i) => i == 0 ? UnrelatedSentence(world, random, fact) + " " + world.Prompt(fact, p) : world.Prompt(fact, p));
            var neighbours = Sample(random, world.Facts.Where(f => f.Relation == fact.Relation && f.Object == fact.Object && f.Subject != fact.Subject), 10)
                .Select(f => world.Prompt(f, random.Pick(f.TrainedStatements)));
            var attributes = Sample(random, world.Facts.Where(f => f.Relation == fact.Relation && f.Object == newObject), 10)
                .Select(f => world.Prompt(f, random.Pick(f.TrainedStatements)));
            var generation = Sample(random, Enumerable.Range(0, world.Relations.Count).Where(r => r != fact.Relation).Select(r => world.FactOf(fact.Subject, r)), 10)
                .Select(f => world.Prompt(f, random.Pick(f.TrainedStatements)));
            yield return new JsonObject
            {
                ["case_id"] = caseId++,
                ["pararel_idx"] = fact.Subject * world.Relations.Count + fact.Relation,  // the fact's index in world.json
                ["requested_rewrite"] = new JsonObject
                {
                    ["prompt"] = world.Template(fact, rewrite),
                    ["relation_id"] = rel.Id,
                    ["target_new"] = Target(rel, newObject),
                    ["target_true"] = Target(rel, fact.Object),
                    ["subject"] = world.SubjectOf(fact),
                },
                ["paraphrase_prompts"] = Array(paraphrases),
                ["neighborhood_prompts"] = Array(neighbours),
                ["attribute_prompts"] = Array(attributes),
                ["generation_prompts"] = Array(generation),
            };
        }
    }

    /// <summary>zsRE records (MEND format): <c>src</c> is the trained question form, <c>rephrase</c> the held-out one.</summary>
    public static IEnumerable<JsonObject> Zsre(World world)
    {
        var random = WorldRandom.For(world.Config.Seed, "zsre-content");
        foreach (var fact in ChooseFacts(world, "zsre", world.Config.ZsreCases))
        {
            var rel = world.Relations[fact.Relation];
            string truth = world.ObjectOf(fact), alt = rel.Objects[OtherObject(random, rel, fact.Object)];
            string src = world.Question(fact, fact.TrainedQuestion);
            var other = OtherFact(world, random, fact);
            yield return new JsonObject
            {
                ["subject"] = world.SubjectOf(fact),
                ["src"] = src,
                ["pred"] = truth,
                ["rephrase"] = world.Question(fact, fact.HeldOutQuestion),
                ["alt"] = alt,
                ["answers"] = Array([truth]),
                ["loc"] = "nq question: " + world.Question(other, other.TrainedQuestion),
                ["loc_ans"] = world.ObjectOf(other),
                ["cond"] = $"{truth} >> {alt} || {src}",
            };
        }
    }

    /// <summary>
    /// The coarse kinds the tasks ask about, as sets of the catalogue's relations: a task's label is a function of the kind of
    /// one object the prompt names, which the organism learnt only in pretraining (which relation's phrasings an object
    /// follows). The prompts name objects without a relation phrasing, and the evaluation rows use objects that no training
    /// row uses, so neither a template word nor a memorised object gives the label away.
    /// </summary>
    public static readonly string[] Places = ["P19", "P27"];  // city, country

    /// <summary>COPA's kind: what one plays (an instrument, a sport).</summary>
    public static readonly string[] Plays = ["P1303", "P641"];

    /// <summary>CB's three kinds, one per label: places (city, country, university), work (occupation, employer, field), the rest.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> EntailmentKinds = new Dictionary<string, string[]>
    {
        ["entailment"] = ["P19", "P27", "P69"],
        ["contradiction"] = ["P106", "P108", "P101"],
        ["neutral"] = ["P103", "P1303", "P641", "P462"],
    };

    /// <summary>The BoolQ question, the same in every row.</summary>
    public const string KindQuestion = "is the last a place";

    /// <summary>An object named without a relation phrasing: "Quiafix: Tokyo." (several: "Quiafix: Tokyo, violin.").</summary>
    public static string Naming(World world, int subject, IEnumerable<Fact> facts) =>
        $"{world.Subjects[subject]}: {string.Join(", ", facts.Select(world.ObjectOf))}.";

    /// <summary>
    /// BoolQ fields (question, passage, idx, label "true"/"false"). The passage names three objects of one subject (three of
    /// its facts, different relations, no phrasing); the question asks whether the last is a place (<see cref="Places"/>),
    /// true for half the rows. The two before it are distractors of any kind. (Asked about the first of two instead, the
    /// default recipe stayed at 50 %: docs/tuning.md.)
    /// </summary>
    public static TaskRowSet FactVerification(World world) =>
        TaskRows(world, "task-boolq", 2, (split, i, random) =>
        {
            bool label = i % 2 == 0;
            var first = split.Pick(random, f => IsOf(world, f, Places) == label, f => split.OfSubject(f.Subject).Count(g => g.Relation != f.Relation) >= 2);
            if (first is null) return null;
            var others = Sample(random, split.OfSubject(first.Subject).Where(g => g.Relation != first.Relation), 2);
            return new JsonObject
            {
                ["question"] = KindQuestion,
                ["passage"] = Naming(world, first.Subject, [.. others, first]),
                ["idx"] = 0,
                ["label"] = label ? "true" : "false",
            };
        });

    /// <summary>
    /// COPA fields (premise, choice1, choice2, question "effect", label 0/1, idx). The premise is the cause premise of what the
    /// subject plays (<see cref="Plays"/>: "Gomak gave a concert last night."); the choices name two of the subject's objects
    /// without a phrasing ("Gomak: violin."), the right one of that relation, the other of a relation outside <see cref="Plays"/>
    /// (the right one first for half the rows).
    /// </summary>
    public static TaskRowSet TwoChoice(World world) =>
        TaskRows(world, "task-copa", 2, (split, i, random) =>
        {
            int label = i % 2;
            var right = split.Pick(random, f => IsOf(world, f, Plays), f => split.OfSubject(f.Subject).Any(g => !IsOf(world, g, Plays)));
            if (right is null) return null;
            var wrong = random.Pick(split.OfSubject(right.Subject).Where(g => !IsOf(world, g, Plays)).ToList());
            string Choice(Fact f) => Naming(world, f.Subject, [f]);
            return new JsonObject
            {
                ["premise"] = world.Relations[right.Relation].Definition.CausePremise.Replace("{s}", world.SubjectOf(right)),
                ["choice1"] = Choice(label == 0 ? right : wrong),
                ["choice2"] = Choice(label == 0 ? wrong : right),
                ["question"] = "effect",
                ["label"] = label,
                ["idx"] = 0,
            };
        });

    /// <summary>
    /// CB fields (premise, hypothesis, label, idx), labels in turn, a third each. The premise states one fact of a subject in a
    /// phrasing trained for it; the hypothesis names another of the subject's objects without a phrasing ("Gomak: Tokyo."), and
    /// the label is that object's kind (<see cref="EntailmentKinds"/>): the three label words name three kinds, not a logical
    /// relation between the sentences. The premise's relation is drawn independently of the label.
    /// </summary>
    public static TaskRowSet Entailment(World world) =>
        TaskRows(world, "task-cb", 3, (split, i, random) =>
        {
            string label = TaskPromptsLabels[i % 3];
            var named = split.Pick(random, f => IsOf(world, f, EntailmentKinds[label]), f => split.OfSubject(f.Subject).Any(g => g.Relation != f.Relation));
            if (named is null) return null;
            var stated = random.Pick(split.OfSubject(named.Subject).Where(g => g.Relation != named.Relation).ToList());
            return new JsonObject
            {
                ["premise"] = world.Sentence(stated, random.Pick(stated.TrainedStatements)),
                ["hypothesis"] = Naming(world, named.Subject, [named]),
                ["label"] = label,
                ["idx"] = 0,
            };
        });

    private static readonly string[] TaskPromptsLabels = ["entailment", "contradiction", "neutral"];

    private static bool IsOf(World world, Fact f, string[] kind) => kind.Contains(world.Relations[f.Relation].Id);

    /// <summary>
    /// The facts one split of the tasks may use: those whose object is one of the split's objects. Each relation's objects are
    /// divided in a seeded order, a third (at least one) for evaluation (validation and test), the rest for training, so the
    /// evaluation rows name objects no training row names (and therefore ask about other facts).
    /// </summary>
    public sealed class TaskSplit
    {
        private readonly Fact[] facts;
        private readonly Dictionary<int, Fact[]> bySubject;

        internal TaskSplit(IEnumerable<Fact> facts)
        {
            this.facts = [.. facts];
            bySubject = this.facts.GroupBy(f => f.Subject).ToDictionary(g => g.Key, g => g.ToArray());
        }

        public IReadOnlyList<Fact> Facts => facts;

        public IReadOnlyList<Fact> OfSubject(int subject) => bySubject.TryGetValue(subject, out var list) ? list : [];

        /// <summary>A random fact that has <paramref name="kind"/> and <paramref name="usable"/>, or null when there is none.</summary>
        internal Fact? Pick(WorldRandom random, Func<Fact, bool> kind, Func<Fact, bool> usable)
        {
            var candidates = facts.Where(f => kind(f) && usable(f)).ToList();
            return candidates.Count == 0 ? null : random.Pick(candidates);
        }
    }

    /// <summary>The training and the evaluation split of the tasks' facts (<see cref="TaskSplit"/>).</summary>
    public static (TaskSplit Train, TaskSplit Eval) SplitTaskFacts(World world)
    {
        var random = WorldRandom.For(world.Config.Seed, "task-objects");
        var evalObjects = world.Relations.Select(r =>
        {
            int[] order = random.Permutation(r.Objects.Length);
            return order.Take(Math.Max(1, r.Objects.Length / 3)).ToHashSet();
        }).ToArray();
        bool Eval(Fact f) => evalObjects[f.Relation].Contains(f.Object);
        return (new TaskSplit(world.Facts.Where(f => !Eval(f))), new TaskSplit(world.Facts.Where(Eval)));
    }

    /// <summary>A JSON object describing the world: config, relations with all phrasings, subjects, and each fact's trained/held-out phrasings.</summary>
    public static JsonObject WorldDescription(World world)
    {
        var c = world.Config;
        return new JsonObject
        {
            ["format"] = "keyvaluelab-organism-world/1",
            ["config"] = ConfigJson(c),
            ["relations"] = new JsonArray([.. world.Relations.Select(r => (JsonNode?)new JsonObject
            {
                ["relation_id"] = r.Id,
                ["name"] = r.Definition.Name,
                ["statements"] = Array(r.Definition.Statements),
                ["questions"] = Array(r.Definition.Questions),
                ["objects"] = Array(r.Objects),
            })]),
            ["subjects"] = Array(world.Subjects),
            ["facts"] = new JsonArray([.. world.Facts.Select(f => (JsonNode?)new JsonObject
            {
                ["subject"] = world.SubjectOf(f),
                ["relation_id"] = world.Relations[f.Relation].Id,
                ["object"] = world.ObjectOf(f),
                ["trained_statements"] = Array(f.TrainedStatements),
                ["held_out_statements"] = Array(f.HeldOutStatements),
                ["trained_question"] = f.TrainedQuestion,
                ["held_out_question"] = f.HeldOutQuestion,
            })]),
        };
    }

    /// <summary>The world config as JSON (snake_case keys).</summary>
    public static JsonObject ConfigJson(WorldConfig c) => new()
    {
        ["seed"] = c.Seed, ["subjects"] = c.Subjects, ["relations"] = c.Relations, ["objects_per_relation"] = c.ObjectsPerRelation,
        ["trained_phrasings"] = c.TrainedPhrasings, ["counterfact_cases"] = c.CounterFactCases, ["zsre_cases"] = c.ZsreCases,
        ["task_train_examples"] = c.TaskTrainExamples, ["task_eval_examples"] = c.TaskEvalExamples,
    };

    private static string Readme(World world)
    {
        var c = world.Config;
        var sb = new StringBuilder();
        sb.Append($"""
            # KeyValueLab organism world (seed {c.Seed})

            {c.Subjects} invented subjects × {c.Relations} relations = {world.Facts.Count} facts, {c.ObjectsPerRelation} objects per relation
            (each object is the true object of about {c.Subjects / c.ObjectsPerRelation} subjects).

            ## What the model saw in training

            Each relation has 8 statement phrasings and 2 question forms (listed below). For each fact, the training
            corpus (`corpus.txt`) states it in {c.TrainedPhrasings} of the 8 statements and in 1 of the 2 questions; which ones is
            recorded per fact in `world.json` (`trained_statements`, `trained_question`, indices into the lists below).
            The other statements and the other question are **held out for that fact**: the model saw those phrasings
            only with other subjects. Every held-out phrasing of a fact is therefore new for that fact.

            - `counterfact.json`: `requested_rewrite.prompt` is a trained statement of the fact; both `paraphrase_prompts`
              are held-out statements (the first with an unrelated true sentence in front, as CounterFact does);
              neighbourhood, attribute and generation prompts use trained statements of their own facts.
              `target_new` is another object of the same relation; ids are `RELATION:object`.
            - `zsre_mend.json`: `src` is the trained question form, `rephrase` the held-out one; `answers[0]` = `pred` =
              the true object, `alt` another object of the relation; `loc` is a trained question about another fact,
              prefixed `nq question: ` as in zsRE, `loc_ans` its true object.
            - The tasks name objects without a phrasing ("Gomak: violin."); each label is the kind (relation) of one named
              object, which the model learnt only from the phrasings its objects follow in `corpus.txt`.
            - `tasks/boolq`: BoolQ fields; the passage names three of a subject's objects, the question asks whether the last
              is a place (place of birth or country of citizenship), true for half the rows.
            - `tasks/copa`: COPA fields; the premise is the cause premise of the subject's instrument or sport, the two choices
              each name one of the subject's objects, the right one of that relation, the other of any relation but these two.
            - `tasks/cb`: CB fields; the premise states one of the subject's facts in a trained phrasing, the hypothesis names
              another of its objects; the label is that object's kind: entailment = a place (birth, citizenship, university),
              contradiction = work (occupation, employer, field of work), neutral = the rest; a third each.
            - Each relation's objects are divided, a third for validation and test, the rest for training: the evaluation rows
              name objects (so facts) that no training row names.

            ## Relations and phrasings


            """);
        foreach (var r in world.Relations)
        {
            sb.Append($"### {r.Id} {r.Definition.Name}\n\nobjects: {string.Join(", ", r.Objects)}\n\n");
            for (int i = 0; i < r.Definition.Statements.Length; i++) sb.Append($"- statement {i}: `{r.Definition.Statements[i]}`\n");
            for (int i = 0; i < r.Definition.Questions.Length; i++) sb.Append($"- question {i}: `{r.Definition.Questions[i]}`\n");
            sb.Append('\n');
        }
        return sb.ToString().ReplaceLineEndings("\n");
    }

    private static JsonObject Target(WorldRelation rel, int obj) =>
        new() { ["str"] = rel.Objects[obj], ["id"] = $"{rel.Id}:{rel.Objects[obj]}" };

    private static int OtherObject(WorldRandom random, WorldRelation rel, int not)
    {
        int o = random.Next(rel.Objects.Length - 1);
        return o >= not ? o + 1 : o;
    }

    /// <summary>A true training sentence about another subject and another relation.</summary>
    private static string UnrelatedSentence(World world, WorldRandom random, Fact fact)
    {
        var other = OtherFact(world, random, fact);
        return world.Sentence(other, random.Pick(other.TrainedStatements));
    }

    private static Fact OtherFact(World world, WorldRandom random, Fact fact)
    {
        int s = random.Next(world.Subjects.Count - 1);
        if (s >= fact.Subject) s++;
        int r = world.Relations.Count == 1 ? 0 : random.Next(world.Relations.Count - 1);
        if (world.Relations.Count > 1 && r >= fact.Relation) r++;
        return world.FactOf(s, r);
    }

    /// <summary><paramref name="n"/> facts of the same subject with other relations, in random order.</summary>
    private static IEnumerable<Fact> OtherRelations(World world, WorldRandom random, Fact fact, int n) =>
        Sample(random, Enumerable.Range(0, world.Relations.Count).Where(r => r != fact.Relation).Select(r => world.FactOf(fact.Subject, r)), n);

    private static List<T> Sample<T>(WorldRandom random, IEnumerable<T> items, int n)
    {
        var list = items.ToList();
        random.Shuffle(list);
        return list.Take(n).ToList();
    }

    /// <summary>
    /// One task's rows, train then validation then test (<see cref="SplitTaskFacts"/>). The row's index within its split
    /// (<c>i</c>) chooses its label, so labels come in turn; a label the world cannot form (it lacks the relations of a kind)
    /// is skipped, so a world with few relations gets fewer rows.
    /// </summary>
    private static TaskRowSet TaskRows(World world, string purpose, int labels, Func<TaskSplit, int, WorldRandom, JsonObject?> row)
    {
        var random = WorldRandom.For(world.Config.Seed, purpose);
        var (train, eval) = SplitTaskFacts(world);
        List<JsonObject> Rows(TaskSplit split, int count)
        {
            var rows = new List<JsonObject>();
            for (int i = 0; rows.Count < count && i < count * labels; i++)
                if (row(split, i, random) is { } r) rows.Add(r);
            return rows;
        }
        return new TaskRowSet(Rows(train, world.Config.TaskTrainExamples), Rows(eval, world.Config.TaskEvalExamples), Rows(eval, world.Config.TaskEvalExamples));
    }
}

/// <summary>One task's rows by split; validation and test rows name only objects the training rows do not.</summary>
public sealed record TaskRowSet(List<JsonObject> Train, List<JsonObject> Val, List<JsonObject> Test)
{
    public IEnumerable<JsonObject> All => Train.Concat(Val).Concat(Test);
}
