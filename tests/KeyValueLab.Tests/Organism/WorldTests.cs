using System.Security.Cryptography;
using System.Text.Json;
using KeyValueLab.Organism;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Organism;

public class WorldTests
{
    internal static readonly WorldConfig Small = new()
    {
        Seed = 7, Subjects = 40, Relations = 8, ObjectsPerRelation = 5, TrainedPhrasings = 4,
        CounterFactCases = 24, ZsreCases = 16, TaskTrainExamples = 30, TaskEvalExamples = 10,
    };

    private static Dictionary<string, string> Hashes(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToDictionary(
            f => Path.GetRelativePath(folder, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    [Fact]
    public void SameSeedGivesByteIdenticalFilesAndAnotherSeedDoesNot()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        using var c = new TempDir();
        WorldExporter.Export(World.Generate(Small), a.Path);
        WorldExporter.Export(World.Generate(Small), b.Path);
        WorldExporter.Export(World.Generate(Small with { Seed = 8 }), c.Path);
        var ha = Hashes(a.Path);
        Assert.Equal(ha, Hashes(b.Path));
        Assert.Equal(15, ha.Count);  // world, corpus, readme, counterfact, zsre, 3 tasks × 3 splits, datasets version
        var hc = Hashes(c.Path);
        Assert.All(ha.Keys.Where(k => k is not "README.md" and not WorldExporter.VersionFile), k => Assert.NotEqual(ha[k], hc[k]));
    }

    [Fact]
    public void WorldIsWellFormed()
    {
        var w = World.Generate(Small);
        Assert.Equal(Small.Subjects, w.Subjects.Distinct().Count());
        var vocabulary = RelationCatalog.All.SelectMany(r => r.Objects).ToHashSet(StringComparer.OrdinalIgnoreCase);
        Assert.All(w.Subjects, s => Assert.DoesNotContain(s, vocabulary));
        Assert.All(w.Relations, r => Assert.True(r.Definition.Statements.Length >= 6));
        Assert.Equal(Small.Subjects * Small.Relations, w.Facts.Count);
        foreach (var f in w.Facts)
        {
            Assert.Equal(Small.TrainedPhrasings, f.TrainedStatements.Length);
            Assert.Empty(f.TrainedStatements.Intersect(f.HeldOutStatements));
            Assert.Equal(8, f.TrainedStatements.Length + f.HeldOutStatements.Length);
        }
        // Objects are shared: every object of every relation belongs to several subjects.
        foreach (var g in w.Facts.GroupBy(f => (f.Relation, f.Object))) Assert.True(g.Count() >= Small.Subjects / Small.ObjectsPerRelation);

        // The corpus holds exactly the trained phrasings of each fact, never a held-out one.
        var corpus = string.Join("\n", w.TrainingDocuments());
        var sentences = w.TrainingSentences().ToHashSet();
        foreach (var f in w.Facts.Take(40))
        {
            Assert.All(f.TrainedStatements, p => Assert.Contains(w.Sentence(f, p), sentences));
            Assert.All(f.HeldOutStatements, p => Assert.DoesNotContain(w.Sentence(f, p), sentences));
            Assert.DoesNotContain(w.Question(f, f.HeldOutQuestion), corpus);
        }
    }

    [Fact]
    public void TokenizerSavesAsTokenizerJsonAndLoadsBack()
    {
        var w = World.Generate(Small);
        var tok = OrganismTokenizer.Build(w);
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), tok.ToTokenizerJson());
        File.WriteAllText(dir.File("tokenizer_config.json"), OrganismTokenizer.TokenizerConfigJson());
        var loaded = Assert.IsType<WordLevelTokenizer>(TokenizerLoader.Load(dir.Path));
        Assert.Equal(tok.Tokens, loaded.Tokens);
        Assert.Equal(1, loaded.BosId);
        Assert.Equal(2, loaded.EosId);
        foreach (var doc in w.TrainingDocuments().Take(50))
        {
            var ids = loaded.Encode(doc);
            Assert.DoesNotContain(loaded.UnknownId, ids);
            Assert.Equal(doc, loaded.Decode(ids));  // the world's text decodes back exactly
        }
        // Subjects and objects are single tokens with or without a leading space (SPEC §3 tokenises " " + object).
        foreach (var f in w.Facts.Take(30))
        {
            Assert.Single(loaded.Encode(" " + w.ObjectOf(f)));
            Assert.Equal(loaded.Encode(w.ObjectOf(f)), loaded.Encode(" " + w.ObjectOf(f)));
            Assert.Single(loaded.Encode(w.SubjectOf(f)));
        }
        Assert.Equal([1, 0, 2], loaded.Encode("<s>Zzzunknown</s>"));
        // Every word of the exports is in the vocabulary.
        foreach (var row in WorldExporter.FactVerification(w).All.Concat(WorldExporter.TwoChoice(w).All).Concat(WorldExporter.Entailment(w).All))
            foreach (var (_, v) in row)
                if (v is System.Text.Json.Nodes.JsonValue jv && jv.TryGetValue<string>(out var text)) Assert.DoesNotContain(loaded.UnknownId, loaded.Encode(text));
    }

    [Fact]
    public void MalformedWordLevelTokenizerJsonIsAnInputError()
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.json");
        foreach (var (json, problem) in new[]
        {
            ("""{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "WordLevel", "vocab": {"<unk>": 0}, "unk_token": "<unk>"}}""", "pre_tokenizer ByteLevel"),
            ("""{"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 2}, "unk_token": "<unk>"}}""", "ids must be exactly 0..n-1"),
            ("""{"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "<unk>"}}""", "not in the vocabulary"),
        })
        {
            File.WriteAllText(f, json);
            var e = Assert.Throws<InputException>(() => TokenizerLoader.Load(f));
            Assert.Equal(f, e.FilePath);
            Assert.Contains(problem, e.Problem);
        }
    }

    // ---- exports have the fields and JSON types of the real data in ../shared/data ----

    /// <summary>A JSON value's structure: object keys with their structures, array element structure, or the value kind.</summary>
    private static string Shape(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "{" + string.Join(",", e.EnumerateObject().OrderBy(p => p.Name, StringComparer.Ordinal).Select(p => p.Name + ":" + Shape(p.Value))) + "}",
        JsonValueKind.Array => "[" + string.Join("|", e.EnumerateArray().Select(Shape).Distinct()) + "]",
        JsonValueKind.True or JsonValueKind.False => "bool",
        _ => e.ValueKind.ToString(),
    };

    private static string FirstRecordShape(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return Shape(doc.RootElement[0]);
    }

    private static string FirstLineShape(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadLines(path).First());
        return Shape(doc.RootElement);
    }

    [Fact]
    public void ExportsHaveTheSchemaOfTheRealData()
    {
        using var dir = new TempDir();
        WorldExporter.Export(World.Generate(Small), dir.Path);
        Assert.Equal(FirstRecordShape(TestData.Path("counterfact/counterfact_500.json")), FirstRecordShape(dir.File("counterfact.json")));
        Assert.Equal(FirstRecordShape(TestData.Path("zsre/zsre_mend_train-1k.json")), FirstRecordShape(dir.File("zsre_mend.json")));
        Assert.Equal(FirstLineShape(TestData.Path("superglue/BoolQ/val.jsonl")), FirstLineShape(dir.File("tasks/boolq/train.jsonl")));
        Assert.Equal(FirstLineShape(TestData.Path("superglue/COPA/val.jsonl")), FirstLineShape(dir.File("tasks/copa/train.jsonl")));
        Assert.Equal(FirstLineShape(TestData.Path("superglue/CB/val.jsonl")), FirstLineShape(dir.File("tasks/cb/train.jsonl")));
        foreach (var task in WorldExporter.Tasks)
            Assert.Equal([30, 10, 10], new[] { "train", "val", "test" }.Select(s => File.ReadLines(dir.File($"tasks/{task}/{s}.jsonl")).Count()));
    }

    [Fact]
    public void CounterFactRecordsAreConsistentWithTheWorld()
    {
        var w = World.Generate(Small);
        var cases = WorldExporter.CounterFact(w).ToList();
        Assert.Equal(Small.CounterFactCases, cases.Count);
        Assert.Equal(Small.Relations, cases.Select(c => (string)c["requested_rewrite"]!["relation_id"]!).Distinct().Count());
        var trueObject = w.Facts.ToDictionary(f => (w.SubjectOf(f), w.Relations[f.Relation].Id), w.ObjectOf);
        foreach (var c in cases)
        {
            var rw = c["requested_rewrite"]!;
            string subject = (string)rw["subject"]!, rel = (string)rw["relation_id"]!, prompt = (string)rw["prompt"]!;
            string truth = (string)rw["target_true"]!["str"]!, target = (string)rw["target_new"]!["str"]!;
            Assert.Contains("{}", prompt);
            Assert.Equal(trueObject[(subject, rel)], truth);
            Assert.NotEqual(truth, target);
            var paraphrases = c["paraphrase_prompts"]!.AsArray().Select(p => (string)p!).ToList();
            Assert.Equal(2, paraphrases.Count);
            Assert.All(paraphrases, p => Assert.Contains(subject, p));
            Assert.All(paraphrases, p => Assert.False(p.EndsWith(prompt.Replace("{}", subject), StringComparison.Ordinal)));
            Assert.NotEmpty(c["neighborhood_prompts"]!.AsArray());
            Assert.NotEmpty(c["attribute_prompts"]!.AsArray());
            Assert.NotEmpty(c["generation_prompts"]!.AsArray());
        }
    }
}
