using System.Text;
using System.Text.Json.Nodes;
using static KeyValueLab.Organism.WorldJson;

namespace KeyValueLab.Organism;

/// <summary>
/// Writes a world's datasets in the formats real data ships in, so every evaluator reads them like real data:
/// <list type="bullet">
/// <item><c>counterfact.json</c>: CounterFact, ROME's original schema (SPEC §2).</item>
/// <item><c>zsre_mend.json</c>: zsRE in MEND's format; <c>answers[0]</c> is the true object, <c>alt</c> another object.</item>
/// <item><c>tasks/{boolq,copa,cb}/{train,val,test}.jsonl</c>: true/false questions about facts (BoolQ fields), multiple choice
/// over objects (COPA fields), entailment between two stated facts (CB fields), with balanced labels, read with the paper's
/// prompt templates; validation and test ask about facts the training rows do not.</item>
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
        {
            int train = world.Config.TaskTrainExamples, eval = world.Config.TaskEvalExamples;
            foreach (var (split, skip, take) in new[] { ("train", 0, train), ("val", train, eval), ("test", train + eval, eval) })
            {
                string p = Path.Combine(folder, TasksFolder, task, split + ".jsonl");
                int idx = 0;
                WriteJsonLines(p, rows.Skip(skip).Take(take).Select(r => { r["idx"] = idx++; return r; }));
                written.Add(p);
            }
        }
        string readme = Path.Combine(folder, "README.md");
        WriteText(readme, Readme(world));
        written.Add(readme);
        return written;
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
    /// True/false questions about the world's facts, with BoolQ's fields (question, passage, idx, label "true"/"false" as the
    /// SuperGLUE file writes it). The question asks whether the subject has an object (the true one for half the rows); the passage
    /// states the same claim in one of the phrasings the model was trained on for that fact, so the claim's object follows a
    /// context the model completes from memory. Whether the claim is true comes from the model's memory alone.
    /// </summary>
    public static List<JsonObject> FactVerification(World world) =>
        TaskRows(world, "task-boolq", (fact, i, random) =>
        {
            var rel = world.Relations[fact.Relation];
            bool label = i % 2 == 0;
            int obj = label ? fact.Object : OtherObject(random, rel, fact.Object);
            string question = rel.Definition.YesNoQuestion.Replace("{s}", world.SubjectOf(fact)).Replace("{o}", rel.Objects[obj]);
            string passage = $"{world.Prompt(fact, random.Pick(fact.TrainedStatements))} {rel.Objects[obj]}.";
            return new JsonObject { ["question"] = question, ["passage"] = passage, ["idx"] = 0, ["label"] = label ? "true" : "false" };
        });

    /// <summary>
    /// Multiple choice over objects, with COPA's fields (premise, choice1, choice2, question "effect", label 0/1, idx): the premise
    /// names the relation, the two choices state it about the subject in one trained phrasing, one with the true object and one with
    /// another object of the relation (the true one first for half the rows). The right choice comes from the model's memory.
    /// </summary>
    public static List<JsonObject> TwoChoice(World world) =>
        TaskRows(world, "task-copa", (fact, i, random) =>
        {
            var rel = world.Relations[fact.Relation];
            string s = world.SubjectOf(fact);
            int phrasing = random.Pick(fact.TrainedStatements);
            string Choice(int o) => $"{world.Prompt(fact, phrasing)} {rel.Objects[o]}.";
            int wrong = OtherObject(random, rel, fact.Object);
            int label = i % 2;
            return new JsonObject
            {
                ["premise"] = rel.Definition.CausePremise.Replace("{s}", s),
                ["choice1"] = Choice(label == 0 ? fact.Object : wrong),
                ["choice2"] = Choice(label == 0 ? wrong : fact.Object),
                ["question"] = "effect",
                ["label"] = label,
                ["idx"] = 0,
            };
        });

    /// <summary>
    /// Entailment between two stated facts, with CB's fields (premise, hypothesis, label, idx); labels in turn, a third each. The
    /// premise states one fact about a subject; the hypothesis restates it in another phrasing (entailment), gives the same relation
    /// another object (contradiction), or states another relation of the same subject (neutral: the premise says nothing about it).
    /// The label follows from the two sentences; the world agrees with every premise.
    /// </summary>
    public static List<JsonObject> Entailment(World world) =>
        TaskRows(world, "task-cb", (fact, i, random) =>
        {
            var rel = world.Relations[fact.Relation];
            int stated = random.Pick(fact.TrainedStatements);
            string premise = world.Sentence(fact, stated);
            string label = world.Relations.Count > 1 ? TaskPromptsLabels[i % 3] : TaskPromptsLabels[i % 2];
            string hypothesis;
            if (label == "neutral")
            {
                var other = OtherRelations(world, random, fact, 1).First();
                hypothesis = world.Sentence(other, random.Next(world.Relations[other.Relation].Definition.Statements.Length));
            }
            else
            {
                int phrasing = random.Next(rel.Definition.Statements.Length - 1);
                if (phrasing >= stated) phrasing++;
                int obj = label == "contradiction" ? OtherObject(random, rel, fact.Object) : fact.Object;
                hypothesis = $"{world.Prompt(fact, phrasing)} {rel.Objects[obj]}.";
            }
            return new JsonObject { ["premise"] = premise, ["hypothesis"] = hypothesis, ["label"] = label, ["idx"] = 0 };
        });

    private static readonly string[] TaskPromptsLabels = ["entailment", "contradiction", "neutral"];

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
            - `tasks/boolq`: BoolQ fields; `question` asks whether the subject has an object (true for half the rows), the
              passage states that claim in a phrasing trained for the fact; whether it is true comes from the model's memory.
            - `tasks/copa`: COPA fields; the premise names the relation, the two choices state it in one trained phrasing with
              the true object and with another one (the true one first in half the rows): multiple choice over objects.
            - `tasks/cb`: CB fields; the premise states a fact, the hypothesis restates it in another phrasing (entailment),
              gives the relation another object (contradiction) or states another relation of the subject (neutral), a third each.
            - In every task the validation and test rows ask about other facts than the training rows.

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
    /// One task's rows, train then validation then test. The evaluation facts (validation and test) are kept apart from the
    /// training facts, so an adapter is scored on facts its training never asked about; each split cycles through its facts in a
    /// seeded order and the row's index within its split (<c>i</c>) balances the labels.
    /// </summary>
    private static List<JsonObject> TaskRows(World world, string purpose, Func<Fact, int, WorldRandom, JsonObject> row)
    {
        var random = WorldRandom.For(world.Config.Seed, purpose);
        int[] order = random.Permutation(world.Facts.Count);
        var (trainFacts, evalFacts) = SplitTaskFacts(world, order);
        var rows = new List<JsonObject>();
        foreach (var (facts, count) in new[] { (trainFacts, world.Config.TaskTrainExamples), (evalFacts, world.Config.TaskEvalExamples), (evalFacts, world.Config.TaskEvalExamples) })
            for (int i = 0; i < count; i++) rows.Add(row(world.Facts[facts[i % facts.Length]], i, random));
        return rows;
    }

    /// <summary>Evaluation facts: the first third of the order at most (and at most one per evaluation row); the rest train.</summary>
    public static (int[] Train, int[] Eval) SplitTaskFacts(World world, int[] order)
    {
        int eval = Math.Clamp(Math.Min(world.Config.TaskEvalExamples, order.Length / 3), 1, Math.Max(1, order.Length - 1));
        return (order[eval..], order[..eval]);
    }
}
