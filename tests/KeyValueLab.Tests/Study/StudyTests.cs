using System.Text.Json.Nodes;
using KeyValueLab.Study;
using KeyValueLab.Tests.Cli;

namespace KeyValueLab.Tests.Study;

/// <summary>Small studies on the shared fixtures, and the pieces they are made of.</summary>
internal static class Studies
{
    /// <summary>A study file holding <paramref name="text"/> is refused with one line naming the file and holding <paramref name="expected"/>.</summary>
    public static void AssertRefused(string text, string expected)
    {
        using var dir = new TempDir();
        string file = dir.File("bad.json");
        File.WriteAllText(file, text);
        var e = Assert.Throws<InputException>(() => StudySpec.Load(file));
        Assert.StartsWith(file + ": ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    public static readonly string Gpt2 = TestData.Path("fixtures/tiny_gpt2");
    public static readonly string Gpt2Tokenizer = TestData.Path("gpt2_tokenizer");
    public static readonly string CounterFact = TestData.Path("counterfact/counterfact_500.json");
    public static readonly string Stories = TestData.Path("llama2c_stories260K");

    /// <summary>tiny_gpt2 with CounterFact and COPA/CB/RTE: FT keys vs values, Key-ROME, a MEMIT batch, LoRA +keys vs +values on NF4.</summary>
    public static JsonObject FixtureStudy(int cases = 2) => new()
    {
        ["name"] = "fixture",
        ["model"] = Gpt2,
        ["tokenizer"] = Gpt2Tokenizer,
        ["edit_data"] = CounterFact,
        ["tasks"] = new JsonObject
        {
            ["copa"] = TestData.Path("superglue/COPA"),
            ["cb"] = TestData.Path("superglue/CB"),
            ["rte"] = TestData.Path("superglue/RTE"),
        },
        ["seeds"] = new JsonArray(1),
        ["editing"] = new JsonObject
        {
            ["cases"] = cases,
            ["generation_prompts"] = 0,
            ["stats_corpus"] = "generated",
            ["stats_samples"] = 8,
            ["runs"] = new JsonArray(
                new JsonObject { ["method"] = "ft", ["sides"] = new JsonArray("keys", "values"), ["layers"] = "1", ["set"] = new JsonArray("steps=3") },
                new JsonObject { ["method"] = "keyrome", ["layers"] = "1", ["set"] = new JsonArray("v_num_grad_steps=3") },
                new JsonObject { ["method"] = "memit", ["layers"] = "0-1", ["set"] = new JsonArray("v_num_grad_steps=3") }),
        },
        ["tuning"] = new JsonObject
        {
            ["targets"] = new JsonArray("c_attn,keys", "c_attn,values"),
            ["four_bit"] = true,
            ["epochs"] = 1,
            ["batch"] = 4,
            ["grad_accum"] = 1,
            ["lr"] = 1e-3,
            ["max_length"] = 64,
            ["max_train"] = 4,
            ["max_eval"] = 3,
            ["eval_batch"] = 4,
        },
    };

    /// <summary>stories260K (llama2.c) with CounterFact and COPA: FT keys vs values, a MEMIT batch and one LoRA run.</summary>
    public static JsonObject StoriesStudy() => new()
    {
        ["name"] = "stories",
        ["model"] = Path.Combine(Stories, "stories260K.bin"),
        ["tokenizer"] = Path.Combine(Stories, "tok512.bin"),
        ["edit_data"] = CounterFact,
        ["tasks"] = new JsonObject { ["copa"] = TestData.Path("superglue/COPA") },
        ["seeds"] = new JsonArray(3),
        ["editing"] = new JsonObject
        {
            ["cases"] = 3,
            ["generation_prompts"] = 1,
            ["generation_tokens"] = 24,
            ["stats_corpus"] = "generated",
            ["stats_samples"] = 8,
            ["runs"] = new JsonArray(
                new JsonObject { ["method"] = "ft", ["sides"] = new JsonArray("keys:up", "keys:gate", "values"), ["layers"] = "2", ["set"] = new JsonArray("steps=3") },
                new JsonObject { ["method"] = "memit", ["layers"] = "1-2", ["set"] = new JsonArray("v_num_grad_steps=3") }),
        },
        ["tuning"] = new JsonObject
        {
            ["targets"] = new JsonArray("q,v,keys:gate", "q,v,values"),
            ["epochs"] = 1, ["batch"] = 2, ["grad_accum"] = 1, ["max_length"] = 128, ["max_train"] = 4, ["max_eval"] = 2, ["label_likelihood"] = false,
        },
    };

    public static string Write(TempDir dir, JsonObject study, string name = "study.json")
    {
        string file = dir.File(name);
        File.WriteAllText(file, study.ToJsonString());
        return file;
    }

    public static StudyPlan Plan(string file)
    {
        var spec = StudySpec.Load(file);
        return StudyPlan.Build(spec, StudyPlan.Resolve(spec, _ => throw new InvalidOperationException("no organism in these tests")), file);
    }

    /// <summary>Every stored unit's result with the wall-clock and CPU-time fields removed, by unit id.</summary>
    public static SortedDictionary<string, string> Numbers(string runFolder)
    {
        using var store = ResultsStore.Open(runFolder, create: false);
        var map = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var u in store.Units())
        {
            var node = JsonNode.Parse(u.Result)!.AsObject();
            foreach (string key in new[] { "seconds", "cpu_seconds", "train_seconds", "tokens_per_second", "peak_resident_bytes" }) node.Remove(key);
            map[u.UnitId] = node.ToJsonString();
        }
        return map;
    }
}

public class StudySpecTests
{
    [Fact]
    public void JsonAndYamlGiveTheSameStudy()
    {
        using var dir = new TempDir();
        string json = Studies.Write(dir, Studies.FixtureStudy());
        string yaml = dir.File("study.yaml");
        File.WriteAllText(yaml, $$"""
            # the same study in YAML
            name: fixture
            model: {{Studies.Gpt2}}
            tokenizer: {{Studies.Gpt2Tokenizer}}
            edit_data: {{Studies.CounterFact}}
            tasks:
              copa: {{TestData.Path("superglue/COPA")}}
              cb: {{TestData.Path("superglue/CB")}}
              rte: {{TestData.Path("superglue/RTE")}}
            seeds: [1]
            editing:
              cases: 2
              generation_prompts: 0
              stats_corpus: generated
              stats_samples: 8
              runs:
                - {method: ft, sides: [keys, values], layers: "1", set: [steps=3]}
                - {method: keyrome, layers: "1", set: [v_num_grad_steps=3]}
                - {method: memit, layers: "0-1", set: [v_num_grad_steps=3]}
            tuning:
              targets: ["c_attn,keys", "c_attn,values"]
              four_bit: true
              epochs: 1
              batch: 4
              grad_accum: 1
              lr: 0.001
              max_length: 64
              max_train: 4
              max_eval: 3
              eval_batch: 4
            """);
        var a = StudySpec.Load(json);
        var b = StudySpec.Load(yaml);
        Assert.Equal(a.Canonical(), b.Canonical());
        Assert.Equal(a.Hash(), b.Hash());
        Assert.Equal(4, a.Editing!.Conditions.Count);
        Assert.Equal(["keys", "values"], a.Editing.Conditions.Where(c => c.Method.Name == "ft").Select(c => c.Side.ToString()));
        Assert.Equal("keys", a.Editing.Conditions.Single(c => c.Method.Name == "keyrome").Side.ToString());
        Assert.Equal(KeyValueLab.Evaluation.EditMode.Batch, a.Editing.Conditions.Single(c => c.Method.Name == "memit").Mode);
    }

    [Theory]
    [InlineData("""{"editing": {"runs": [{"method": "rone"}]}}""", "editing.runs[0].method: unknown editor \"rone\"")]
    [InlineData("""{"editing": {"runs": [{"method": "ft", "sides": ["both ways"]}]}}""", "unknown side")]
    [InlineData("""{"editing": {"runs": [{"method": "rome", "sides": ["keys"]}]}}""", "ROME edits the values")]
    [InlineData("""{"editing": {"runs": [{"method": "ft", "layers": "one"}]}}""", "layers must look like")]
    [InlineData("""{"editing": {"cases": 0, "runs": [{"method": "ft"}]}}""", "editing.cases: must be a whole number")]
    [InlineData("""{"tuning": {"targets": ["q,v"], "lr": "fast"}, "tasks": {"copa": "x"}}""", "tuning.lr: must be a number")]
    [InlineData("""{"tuning": {"targets": ["q,v"], "epoch": 3}, "tasks": {"copa": "x"}}""", "tuning.epoch: unknown field")]
    [InlineData("""{"tuning": {"targets": ["q,v"]}, "tasks": {"hellaswag": "x"}}""", "tasks.hellaswag")]
    [InlineData("""{"seeds": [1, 1], "tuning": {"targets": ["q,v"]}, "tasks": {"copa": "x"}}""", "seeds: seeds repeat")]
    [InlineData("""{"name": "nothing"}""", "neither an editing nor a tuning section")]
    [InlineData("""[1, 2]""", "must be an object")]
    [InlineData("""{"editing": """, "not valid JSON")]
    [InlineData("""{"name": "a", "name": "b", "editing": {"runs": [{"method": "ft"}]}}""", "Duplicate property 'name'")]
    [InlineData("""{"editing": {"runs": [{"method": "ft", "set": ["stepz=3"]}]}}""", "editing.runs[0].set: stepz: not a hyperparameter of ft")]
    [InlineData("""{"editing": {"runs": [{"method": "memit", "set": ["mom2_update_weight=-5"]}]}}""", "editing.runs[0].set: mom2_update_weight: must be a finite number >= 0, not -5")]
    [InlineData("""{"editing": {"runs": [{"method": "ft", "sides": {"a": 1}}]}}""", "editing.runs[0].sides: must be a string or a list of strings, not {\"a\":1}")]
    [InlineData("""{"editing": {"runs": [{"method": "ft", "stepz": 3}]}}""", "editing.runs[0].stepz: unknown field (known here: method, sides, side, layers, mode, set, chunk, checkpoint_every, generation)")]
    [InlineData("""{"editing": {"runs": [5]}}""", "editing.runs[0]: must be a mapping, not 5")]
    [InlineData("""{"seeds": "1", "editing": {"runs": [{"method": "ft"}]}}""", "seeds: must be a list of whole numbers, not \"1\"")]
    [InlineData("""{"editing": {"zsre_target": "both", "runs": [{"method": "ft"}]}}""", "editing.zsre_target: must be answer or alt")]
    public void BadStudyFilesAreRejectedWithTheFileAndTheField(string text, string expected) => Studies.AssertRefused(text, expected);

    [Fact]
    public void DefaultStudyIsThePapersGrid()
    {
        var spec = StudySpec.Default();
        Assert.Equal(["keys:up", "keys:gate", "values"], spec.Editing!.Conditions.Where(c => c.Method.Name == "ft" && c.Overrides.Count == 0).Select(c => c.Side.ToString()));
        // FT also at a second budget, so that "values edit better" does not rest on one learning rate (issue 10, item 5).
        Assert.Equal(["keys:up", "values"], spec.Editing.Conditions.Where(c => c.Method.Name == "ft" && c.Overrides.Count > 0).Select(c => c.Side.ToString()));
        Assert.Contains(spec.Editing.Conditions, c => c.Method.Name == "rome");
        Assert.Contains(spec.Editing.Conditions, c => c.Method.Name == "keyrome");
        Assert.Contains(spec.Editing.Conditions, c => c.Method.Name == "memit" && c.Mode == KeyValueLab.Evaluation.EditMode.Batch);
        Assert.Equal(["q,v", "q,v,keys:up", "q,v,keys:gate", "q,v,values"], spec.Tuning!.Targets);
        Assert.True(spec.Tuning.FourBit);
        Assert.True(spec.Seeds.Count >= 3);  // K >= 3 organisms
        Assert.Equal(["q,v", "+keys:up", "+keys:gate", "+values"], spec.Tuning.Targets.Select(StudyPlan.Label));
    }

    [Fact]
    public void ShardsPartitionTheGroups()
    {
        for (int n = 1; n <= 4; n++)
        {
            var shards = Enumerable.Range(1, n).Select(k => new Shard(k, n)).ToList();
            for (int g = 0; g < 23; g++) Assert.Equal(1, shards.Count(s => s.Takes(g)));
        }
        Assert.Equal(new Shard(2, 3), Shard.Parse("2/3"));
        Assert.Throws<ArgumentException>(() => Shard.Parse("4/3"));
        Assert.Throws<ArgumentException>(() => Shard.Parse("0/3"));
        Assert.Throws<ArgumentException>(() => Shard.Parse("two"));
    }
}

public class StudyPlanTests
{
    [Fact]
    public void PlanLaysOutEveryUnitOnce()
    {
        using var dir = new TempDir();
        var plan = Studies.Plan(Studies.Write(dir, Studies.FixtureStudy()));
        Assert.Equal(4 * 2 + 2, plan.UnitCount);
        Assert.Equal(plan.UnitCount, plan.Groups.SelectMany(g => g.UnitIds).Distinct().Count());
        Assert.Equal(["copa", "cb", "rte"], plan.Tasks.Select(t => t.Name));
    }

    [Theory]
    [InlineData("layers", "7", "layer 7 is not a layer of this model")]
    [InlineData("target", "c_attn,q", "tuning target set \"c_attn,q\"")]
    [InlineData("target", "c_attn,mlp.c_nope", "has no module \"mlp.c_nope\"")]
    [InlineData("side", "keys:up", "has key matrices")]
    public void PlanRejectsWhatTheModelDoesNotHave(string what, string value, string expected)
    {
        using var dir = new TempDir();
        var study = Studies.FixtureStudy();
        if (what == "layers") study["editing"]!["runs"]![0]!["layers"] = value;
        if (what == "target") study["tuning"]!["targets"] = new JsonArray(value);
        if (what == "side") study["editing"]!["runs"]![0]!["sides"] = new JsonArray(value);
        string file = Studies.Write(dir, study);
        var e = Assert.Throws<InputException>(() => Studies.Plan(file));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void UnreadableDataIsRejectedBeforeAnyWork()
    {
        using var dir = new TempDir();
        var study = Studies.FixtureStudy();
        study["tasks"]!["copa"] = dir.File("no-such-copa");
        string file = Studies.Write(dir, study);
        string run = dir.File("run");
        var (code, stdout, stderr) = Kvlab.Run("study", "--study", file, "--out", run);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains("no-such-copa", stderr);
        Assert.False(Directory.Exists(run));
    }

    [Theory]
    [InlineData("""{"editing": {"runs": [{"method": "rome", "layers": "9"}]}}""", "layer 9 is not a layer")]
    [InlineData("""{"editing": {"runs": [{"method": "frobnicate"}]}}""", "unknown editor")]
    [InlineData("""{"tuning": {"targets": ["c_attn,gate_proj"]}}""", "has no module \"gate_proj\"")]
    [InlineData("""{"edit_data": "/no/such/counterfact.json", "editing": {"runs": [{"method": "ft"}]}}""", "/no/such/counterfact.json: edit_data: no such file")]
    public void KvlabStudyRejectsBadStudyFilesWithOneLineBeforeAnyWork(string overlay, string expected)
    {
        using var dir = new TempDir();
        var study = Studies.FixtureStudy();
        study.Remove("editing");
        study.Remove("tuning");
        foreach (var (k, v) in JsonNode.Parse(overlay)!.AsObject()) study[k] = v?.DeepClone();
        string file = Studies.Write(dir, study);
        string run = dir.File("run");
        var (code, stdout, stderr) = Kvlab.Run("study", "--study", file, "--out", run);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains(expected, stderr);
        Assert.False(Directory.Exists(run));
    }
}

public class ResultsStoreTests
{
    private static UnitRecord Unit(string id, string result = "{}") =>
        new(id, "edit", "g", 1, "{}", result, 0.5, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "host", "v", "");

    [Fact]
    public void UnitsAreStoredOnceAndReadBackInIdOrder()
    {
        using var dir = new TempDir();
        using (var store = ResultsStore.Open(dir.Path, create: true))
        {
            store.Bind(StudySpec.Default(), "fp");
            store.Add([Unit("b"), Unit("a")]);
            Assert.Throws<InvalidOperationException>(() => store.Add([Unit("c"), Unit("a")]));
        }
        using var reopened = ResultsStore.Open(dir.Path, create: false);
        Assert.Equal(["a", "b"], reopened.Units().Select(u => u.UnitId));  // the failed batch left nothing (not even "c")
        reopened.Bind(StudySpec.Default(), "fp");
        var e = Assert.Throws<InputException>(() => reopened.Bind(StudySpec.Default() with { Seeds = [7] }, "fp"));
        Assert.Contains("differs in: seeds", e.Message);
        Assert.Throws<InputException>(() => reopened.Bind(StudySpec.Default(), "other model"));
    }

    [Fact]
    public void ShardsMergeAndConflictsAreRefused()
    {
        using var dir = new TempDir();
        string a = dir.File("a"), b = dir.File("b"), c = dir.File("c");
        using (var s = ResultsStore.Open(a, true)) { s.Bind(StudySpec.Default(), "fp"); s.Add([Unit("u1", "{\"x\":1}")]); }
        using (var s = ResultsStore.Open(b, true)) { s.Bind(StudySpec.Default(), "fp"); s.Add([Unit("u2"), Unit("u1", "{\"x\":1}")]); }
        using (var s = ResultsStore.Open(c, true)) { s.Bind(StudySpec.Default() with { Name = "other" }, "fp"); s.Add([Unit("u3")]); }
        using var target = ResultsStore.Open(a, false);
        using (var other = ResultsStore.Open(b, false)) Assert.Equal(1, target.MergeFrom(other));
        Assert.Equal(["u1", "u2"], target.Units().Select(u => u.UnitId));
        using (var other = ResultsStore.Open(c, false)) Assert.Throws<InputException>(() => target.MergeFrom(other));
    }

    [Fact]
    public void AFileThatIsNotAStoreIsRejected()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File(ResultsStore.FileName), "this is not sqlite");
        var e = Assert.Throws<InputException>(() => ResultsStore.Open(dir.Path, create: false));
        Assert.Contains(ResultsStore.FileName, e.Message);
    }
}

public class StudyRunTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void FixtureStudyRunsEndToEndAndAReRunDoesNothing()
    {
        using var dir = new TempDir();
        string file = Studies.Write(dir, Studies.FixtureStudy());
        string run = dir.File("run");
        var (code, stdout, stderr) = Kvlab.Run("study", "--study", file, "--out", run);
        Assert.True(code == 0, stderr);
        using (var store = ResultsStore.Open(run, false))
        {
            var results = StudyRunner.Load(store, "x");
            Assert.Equal(8, results.Edits.Count);
            Assert.Equal(2, results.Tunes.Count);
            Assert.All(results.Edits, e => Assert.NotNull(e.Post.ES));
            Assert.Equal(["keys", "values"], results.Edits.Where(e => e.Method == "FT").Select(e => e.Side).Distinct().Order());
            Assert.All(results.Tunes, t => Assert.Equal(["copa", "cb", "rte"], t.Tasks.Select(x => x.Task)));
            Assert.All(results.Tunes, t => Assert.All(t.Tasks, x => Assert.Equal(x.Count, x.Correct.Count)));
            Assert.True(results.Tunes.Single(t => t.Label == "c_attn,keys").TrainableParameters == results.Tunes.Single(t => t.Label == "c_attn,values").TrainableParameters);
            Assert.All(results.Tunes, t => Assert.True(t.FourBit && t.BaseBytesStored < t.BaseBytesFp32));
        }
        Assert.True(File.Exists(Path.Combine(run, "report", "report.md")));
        Assert.True(Directory.Exists(Path.Combine(run, "adapters")));
        var before = Studies.Numbers(run);
        var again = Kvlab.Run("study", "--study", file, "--out", run);
        Assert.True(again.Code == 0, again.Stderr);
        Assert.Contains("0 units run now", again.Stderr);
        Assert.Equal(before, Studies.Numbers(run));
    }

    [Fact]
    public void Stories260KStudyRunsEndToEndAndAnInterruptedRunResumesToTheSameUnitsAndNumbers()
    {
        using var dir = new TempDir();
        string file = Studies.Write(dir, Studies.StoriesStudy());
        var plan = Studies.Plan(file);

        // Every run of this test computes on one torch thread. With OpenMP the thread count belongs to the calling thread, and
        // the test host's pool threads carry whatever count an earlier test left on them, so the in-process runs below could
        // compute MEMIT's batch with another thread count than the kvlab process did, and differ in the last bits (a clean-clone
        // run showed exactly that: three MEMIT units differing by 1e-6 relative after the resume).
        string whole = dir.File("whole");
        var (code, stdout, stderr) = Kvlab.Run("study", "--study", file, "--out", whole, "--threads", "1");
        Assert.True(code == 0, stderr);
        Assert.NotEqual("", stdout);
        var numbers = Studies.Numbers(whole);
        Assert.Equal(plan.UnitCount, numbers.Count);
        Assert.Equal(4 * 3 + 2, numbers.Count);
        Assert.Contains(numbers.Keys, k => k.StartsWith("edit/ft/keys:gate/L2/s3/", StringComparison.Ordinal));
        Assert.Contains("tune/+values/s3", numbers.Keys);

        // SIGKILL a real kvlab process once at least 2 units are stored (at a seeded moment after that), then stop
        // in-process inside the MEMIT batch's group (after 10 units), then finish.
        string resumed = dir.File("resumed");
        // The kill's delay comes from a seed, printed so a failing run can be replayed with KVLAB_TEST_SEED=<seed>.
        int seed = int.TryParse(Environment.GetEnvironmentVariable("KVLAB_TEST_SEED"), out int given) ? given : Random.Shared.Next();
        int delayMs = new Random(seed).Next(0, 400);
        output.WriteLine($"kill seed {seed}: SIGKILL {delayMs} ms after 2 units are stored");
        KillWhenStored(file, resumed, 2, delayMs);
        using var cancel = new CancellationTokenSource();
        var progress = new Inline(p => { if (p.Task == "study" && p.Done >= 10) cancel.Cancel(); });
        int threadsBefore = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1);
        try
        {
            Assert.ThrowsAny<OperationCanceledException>(() => new StudyRunner(plan, resumed, Shard.All, progress: progress).Run(cancel.Token));
            using (var partial = ResultsStore.Open(resumed, false)) Assert.InRange(partial.Units().Count, 10, plan.UnitCount - 1);
            new StudyRunner(plan, resumed, Shard.All).Run();
        }
        finally { TorchSharp.torch.set_num_threads(threadsBefore); }
        var (expected, actual) = (Studies.Numbers(whole), Studies.Numbers(resumed));
        var differing = expected.Keys.Union(actual.Keys).Where(k => expected.GetValueOrDefault(k) != actual.GetValueOrDefault(k)).ToList();
        Assert.True(differing.Count == 0, $"seed {seed}: {differing.Count} units differ after the resume:\n" +
            string.Join("\n", differing.Select(k => $"{k}\n  whole:   {expected.GetValueOrDefault(k)}\n  resumed: {actual.GetValueOrDefault(k)}")));

        // Same seed twice (one of them interrupted twice) → identical metric tables.
        var rebuilt = Kvlab.Run("report", resumed);
        Assert.True(rebuilt.Code == 0, rebuilt.Stderr);
        foreach (string table in new[] { "editing_summary.csv", "editing_differences.csv", "tuning_tasks.csv", "tuning_pairs.csv", "editing_summary.json", "tuning_tasks.json" })
            Assert.Equal(File.ReadAllText(Path.Combine(whole, "report", "tables", table)), File.ReadAllText(Path.Combine(resumed, "report", "tables", table)));
    }

    [Fact]
    public void ShardedRunsMergeIntoTheWholeStudy()
    {
        using var dir = new TempDir();
        var study = Studies.StoriesStudy();
        study.Remove("tuning");
        study.Remove("tasks");
        string file = Studies.Write(dir, study);
        var plan = Studies.Plan(file);
        string whole = dir.File("whole"), s1 = dir.File("s1"), s2 = dir.File("s2");
        new StudyRunner(plan, whole, Shard.All).Run();
        int ran1 = new StudyRunner(plan, s1, new Shard(1, 2)).Run();
        int ran2 = new StudyRunner(plan, s2, new Shard(2, 2)).Run();
        Assert.Equal(plan.UnitCount, ran1 + ran2);
        Assert.True(ran1 > 0 && ran2 > 0);
        var (code, _, stderr) = Kvlab.Run("report", s1, s2);
        Assert.True(code == 0, stderr);
        Assert.Equal(Studies.Numbers(whole), Studies.Numbers(s1));
    }

    /// <summary>Starts <c>kvlab study</c> as a process and kills it (whole tree) <paramref name="delayMs"/> after <paramref name="units"/> units are stored.</summary>
    private static void KillWhenStored(string studyFile, string run, int units, int delayMs)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvlab.dll"));
        foreach (string a in new[] { "study", "--study", studyFile, "--out", run, "--no-report", "--threads", "1" }) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        _ = p.StandardOutput.ReadToEndAsync();
        _ = p.StandardError.ReadToEndAsync();
        var deadline = DateTime.UtcNow.AddMinutes(5);
        while (DateTime.UtcNow < deadline && !p.HasExited)
        {
            if (File.Exists(Path.Combine(run, ResultsStore.FileName)))
            {
                try
                {
                    using var store = ResultsStore.Open(run, create: false);
                    if (store.UnitIds().Count >= units) break;
                }
                catch (InputException) { }  // busy or being created
            }
            Thread.Sleep(50);
        }
        Thread.Sleep(delayMs);
        Assert.False(p.HasExited, "the study finished before it could be killed");
        p.Kill(entireProcessTree: true);
        p.WaitForExit();
    }

    private sealed class Inline(Action<WorkProgress> report) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value) => report(value);
    }
}
