using System.Text.Json.Nodes;
using KeyValueLab.Organism;

namespace KeyValueLab.Tests.Organism;

/// <summary>
/// The organism's classification tasks, checked against the world itself: every named object is looked up among the
/// subject's facts and every stated sentence matched against every phrasing and object, each label is recomputed from the
/// named object's relation and a table of kinds written here, labels are balanced in every split, and the evaluation splits
/// name objects the training split never does.
/// </summary>
public class TaskExportTests
{
    private static readonly World W = World.Generate(WorldTests.Small with { TaskTrainExamples = 60, TaskEvalExamples = 12 });

    // The kinds, written out here from the catalogue's relation names (not taken from WorldExporter), as the tasks define them.
    private static readonly string[] PlaceNames = ["place of birth", "country of citizenship"];
    private static readonly string[] PlayNames = ["instrument", "sport"];
    private static readonly Dictionary<string, string[]> CbNames = new()
    {
        ["entailment"] = ["place of birth", "country of citizenship", "educated at"],
        ["contradiction"] = ["occupation", "employer", "field of work"],
        ["neutral"] = ["native language", "instrument", "sport", "favourite colour"],
    };

    private static string NameOf(int relation) => W.Relations[relation].Definition.Name;

    /// <summary>The (subject, relation, object) a sentence "…{prompt} {object}." states, found by trying every phrasing.</summary>
    private static (int Subject, int Relation, int Object) Parse(string sentence)
    {
        var found = new List<(int, int, int)>();
        for (int s = 0; s < W.Subjects.Count; s++)
            for (int r = 0; r < W.Relations.Count; r++)
                foreach (string statement in W.Relations[r].Definition.Statements)
                    for (int o = 0; o < W.Relations[r].Objects.Length; o++)
                        if (sentence == $"{World.Fill(statement, W.Subjects[s])} {W.Relations[r].Objects[o]}.") found.Add((s, r, o));
        return Assert.Single(found);
    }

    /// <summary>
    /// The facts a naming "Subject: o1, o2." names, in order: each object must be the subject's true object of exactly one
    /// relation (the namings state facts of the world, with no phrasing).
    /// </summary>
    private static List<Fact> ParseNaming(string text)
    {
        int colon = text.IndexOf(": ", StringComparison.Ordinal);
        Assert.True(colon > 0 && text.EndsWith('.'), text);
        int subject = W.Subjects.ToList().IndexOf(text[..colon]);
        Assert.True(subject >= 0, text);
        return [.. text[(colon + 2)..^1].Split(", ").Select(o => Assert.Single(Enumerable.Range(0, W.Relations.Count)
            .Select(r => W.FactOf(subject, r)), f => W.ObjectOf(f) == o))];
    }

    private static void Balanced<T>(IEnumerable<JsonObject> rows, Func<JsonObject, T> label, int labels)
    {
        var counts = rows.GroupBy(label).Select(g => g.Count()).ToList();
        Assert.Equal(labels, counts.Count);
        Assert.True(counts.Max() - counts.Min() <= 1, string.Join(", ", counts));
    }

    /// <summary>
    /// Every split is full and balanced, and the validation and test rows name no object (and so no fact) that a training
    /// row names: the label must come from what the model knows of an object no training row showed it.
    /// </summary>
    private static void SplitsAreApart<T>(TaskRowSet rows, Func<JsonObject, IEnumerable<Fact>> facts, Func<JsonObject, T> label, int labels)
    {
        Assert.Equal(W.Config.TaskTrainExamples, rows.Train.Count);
        Assert.Equal(W.Config.TaskEvalExamples, rows.Val.Count);
        Assert.Equal(W.Config.TaskEvalExamples, rows.Test.Count);
        foreach (var split in new[] { rows.Train, rows.Val, rows.Test }) Balanced(split, label, labels);
        var trained = rows.Train.SelectMany(facts).Select(f => (f.Relation, f.Object)).ToHashSet();
        var evaluated = rows.Val.Concat(rows.Test).SelectMany(facts).Select(f => (f.Relation, f.Object)).ToHashSet();
        Assert.Empty(evaluated.Intersect(trained));
        Assert.True(evaluated.Count >= W.Relations.Count, $"{evaluated.Count} objects in the evaluation rows");
    }

    [Fact]
    public void EveryTaskPromptTokenisesWithoutUnknownWords()
    {
        // The tuner reads the rows through the paper's templates; "Relationship" and "):" of the CB template were once unknown.
        using var dir = new TempDir();
        WorldExporter.Export(W, dir.Path);
        var tokenizer = OrganismTokenizer.Build(W);
        foreach (string task in WorldExporter.Tasks)
        {
            var data = KeyValueLab.Tuning.TaskLoader.Load(task, Path.Combine(dir.Path, WorldExporter.TasksFolder, task));
            foreach (var example in data.Train.Take(20).Concat(data.Eval.Take(20)))
                Assert.DoesNotContain(tokenizer.UnknownId, tokenizer.Encode(example.TrainingText));
        }
    }

    [Fact]
    public void TrueFalseAnswersSayWhetherTheLastOfThreeNamedObjectsIsAPlace()
    {
        var rows = WorldExporter.FactVerification(W);
        foreach (var row in rows.All)
        {
            Assert.Equal("is the last a place", (string)row["question"]!);
            var named = ParseNaming((string)row["passage"]!);
            Assert.Equal(3, named.Count);
            Assert.Equal(3, named.Select(f => f.Relation).Distinct().Count());
            Assert.Equal(PlaceNames.Contains(NameOf(named[2].Relation)) ? "true" : "false", (string)row["label"]!);
        }
        SplitsAreApart(rows, r => ParseNaming((string)r["passage"]!), r => (string)r["label"]!, 2);
        // The objects before the last are distractors of either kind.
        Assert.Equal(2, rows.Train.Select(r => PlaceNames.Contains(NameOf(ParseNaming((string)r["passage"]!)[0].Relation))).Distinct().Count());
    }

    [Fact]
    public void TheRightChoiceNamesWhatThePremiseSaysTheSubjectPlays()
    {
        var rows = WorldExporter.TwoChoice(W);
        foreach (var row in rows.All)
        {
            var c1 = Assert.Single(ParseNaming((string)row["choice1"]!));
            var c2 = Assert.Single(ParseNaming((string)row["choice2"]!));
            Assert.Equal(c1.Subject, c2.Subject);
            Assert.True(PlayNames.Contains(NameOf(c1.Relation)) ^ PlayNames.Contains(NameOf(c2.Relation)));
            var right = PlayNames.Contains(NameOf(c1.Relation)) ? c1 : c2;
            Assert.Equal(right == c1 ? 0 : 1, (int)row["label"]!);
            Assert.Equal(W.Relations[right.Relation].Definition.CausePremise.Replace("{s}", W.Subjects[right.Subject]), (string)row["premise"]!);
            Assert.Equal("effect", (string)row["question"]!);
        }
        SplitsAreApart(rows, r => ParseNaming((string)r["choice1"]!).Concat(ParseNaming((string)r["choice2"]!)), r => (int)r["label"]!, 2);
    }

    [Fact]
    public void EntailmentLabelsNameTheKindOfTheHypothesisObject()
    {
        var rows = WorldExporter.Entailment(W);
        foreach (var row in rows.All)
        {
            var premise = Parse((string)row["premise"]!);
            var stated = W.FactOf(premise.Subject, premise.Relation);
            Assert.Equal(stated.Object, premise.Object);  // premises are true
            Assert.Contains(stated.TrainedStatements, p => (string)row["premise"]! == W.Sentence(stated, p));
            var named = Assert.Single(ParseNaming((string)row["hypothesis"]!));
            Assert.Equal(premise.Subject, named.Subject);
            Assert.NotEqual(premise.Relation, named.Relation);
            Assert.Equal(Assert.Single(CbNames, k => k.Value.Contains(NameOf(named.Relation))).Key, (string)row["label"]!);
        }
        SplitsAreApart(rows, r => [Parse((string)r["premise"]!) is var p ? W.FactOf(p.Subject, p.Relation) : null!, .. ParseNaming((string)r["hypothesis"]!)],
            r => (string)r["label"]!, 3);
    }

    [Fact]
    public void EveryRelationOfTheCatalogueHasOneEntailmentKindAndTheKindsExist()
    {
        // A relation outside every kind would silently never be asked about; the named relations must be the catalogue's.
        foreach (var r in RelationCatalog.All.Take(10))
            Assert.Single(CbNames, k => k.Value.Contains(r.Name));
        var ids = RelationCatalog.All.ToDictionary(r => r.Name, r => r.Id);
        Assert.Equal(PlaceNames.Select(n => ids[n]), WorldExporter.Places);
        Assert.Equal(PlayNames.Select(n => ids[n]), WorldExporter.Plays);
        foreach (var (label, names) in CbNames) Assert.Equal(names.Select(n => ids[n]), WorldExporter.EntailmentKinds[label]);
    }

    [Fact]
    public void ACachedOrganismWithOlderDatasetsGetsThemRegeneratedAndKeepsItsModel()
    {
        using var cache = new TempDir();
        var spec = PretrainerTests.Tiny with { Training = PretrainerTests.Tiny.Training with { Epochs = 1 } };
        var built = OrganismBuilder.Build(spec, cache.Path);
        string boolq = Path.Combine(built.DataFolder, WorldExporter.TasksFolder, "boolq", "train.jsonl");
        byte[] tasks = File.ReadAllBytes(boolq), model = File.ReadAllBytes(Path.Combine(built.ModelFolder, "model.safetensors"));
        // An entry written by the code before the datasets had a version: other task rows, no version file.
        File.WriteAllText(boolq, "{\"question\":\"old\",\"passage\":\"old\",\"idx\":0,\"label\":\"true\"}\n");
        File.Delete(Path.Combine(built.DataFolder, WorldExporter.VersionFile));
        var lines = new List<string>();
        var again = OrganismBuilder.Build(spec, cache.Path, log: lines.Add);
        Assert.True(again.Reused);
        Assert.Equal(tasks, File.ReadAllBytes(boolq));
        Assert.Equal(model, File.ReadAllBytes(Path.Combine(again.ModelFolder, "model.safetensors")));
        Assert.Contains(lines, l => l.StartsWith("datasets regenerated", StringComparison.Ordinal));
        Assert.True(WorldExporter.IsCurrent(again.DataFolder));
        // A current entry is left alone.
        lines.Clear();
        OrganismBuilder.Build(spec, cache.Path, log: lines.Add);
        Assert.Empty(lines);
    }
}
