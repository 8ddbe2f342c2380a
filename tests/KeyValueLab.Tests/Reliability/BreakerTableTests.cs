using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using KeyValueLab.Cli;
using KeyValueLab.Study;
using KeyValueLab.Tests.Cli;
using KeyValueLab.Tests.Study;
using Microsoft.Data.Sqlite;

namespace KeyValueLab.Tests.Reliability;

/// <summary>
/// One breaker per row, by the class of issue 13 it belongs to: the command must exit with the class's code, print one
/// line on stderr naming the file (or the option) at fault and nothing on stdout, leave every input byte for byte as it
/// was (kvlab's own lock files aside) and leave no folder where it refused to start.
/// </summary>
public class BreakerTableTests
{
    private static readonly string Gpt2 = Studies.Gpt2, Tok = Studies.Gpt2Tokenizer, Copa = TestData.Path("superglue/COPA");

    /// <summary>A prepared breaker: the command line, the code, what stderr must contain, the inputs, the folder that must not appear.</summary>
    private sealed record Breaker(string[] Args, int Code, string Names, string[] Inputs, string? NoFolder = null);

    private static readonly Dictionary<string, Func<TempDir, Breaker>> Cases = new()
    {
        // Class 1: no case is lost to another's file, and no case is counted twice.
        ["1 edit-eval: case ids that differ only in letter case"] = d => EditEval(d, r => r[1]!["case_id"] = "Paris", r => r[0]!["case_id"] = "paris", "differ only in letter case"),
        ["1 edit-eval: a case_id twice"] = d => EditEval(d, r => r[1]!["case_id"] = r[0]!["case_id"]!.DeepClone(), _ => { }, "duplicate case_id"),
        ["1 study: a case_id twice in the edit data"] = d =>
        {
            var records = JsonNode.Parse(File.ReadAllText(Studies.CounterFact))!.AsArray();
            var two = new JsonArray(records[0]!.DeepClone(), records[1]!.DeepClone());
            two[1]!["case_id"] = two[0]!["case_id"]!.DeepClone();
            return EditData(d, Encoding.UTF8.GetBytes(two.ToJsonString()), "") with { Names = $"duplicate case_id {two[0]!["case_id"]}" };
        },

        // Class 2: parsing is bounded.
        ["2 a study file over 1 MiB"] = d => StudyFile(d, "big.json", "{\"name\": \"x\"" + new string(' ', 1 << 20) + "}", "a study file is at most"),
        ["2 a YAML study file of nested aliases"] = d => StudyFile(d, "bomb.yaml", AliasBomb(), "expands to more than 100,000 nodes"),
        ["2 a YAML study file with a non-scalar key"] = d => StudyFile(d, "key.yaml", "? [a, b]\n: 1\nname: x\n", "a mapping key must be a plain value"),

        // Class 3: sizes the checkpoint cannot hold are refused before anything is built.
        ["3 n_layer 2147483647"] = d => Generate(ModelCopy(d, c => c["n_layer"] = int.MaxValue), "config.json"),
        ["3 n_layer 1000000000"] = d => Generate(ModelCopy(d, c => c["n_layer"] = 1_000_000_000), "config.json"),
        ["3 vocab_size 1000000000"] = d => Generate(ModelCopy(d, c => c["vocab_size"] = 1_000_000_000), "config.json"),

        // Class 4: a store that knows what it is.
        ["4 results.db missing next to report/ and adapters/"] = d => Study(d, FinishedRun(d, run => File.Delete(Db(run))), "results.db: is missing but"),
        ["4 results.db emptied next to report/"] = d => Study(d, FinishedRun(d, run => File.WriteAllBytes(Db(run), [])), "results.db: is empty but"),
        ["4 units table dropped"] = d => Study(d, FinishedRun(d, run => Sql(run, "DROP TABLE units")), "results.db: lacks its units table"),
        ["4 empty SQLite file next to report/"] = d => Study(d, FinishedRun(d, run => { File.Delete(Db(run)); Sql(run, "PRAGMA user_version = 0; VACUUM"); }), "results.db: holds no tables"),
        ["4 a damaged page"] = d => Study(d, FinishedRun(d, Corrupt), "results.db"),
        ["4 report: a unit whose result is null"] = d => Report(FinishedRun(d, run => Sql(run, "UPDATE units SET result = 'null' WHERE unit_id = 'edit/a'")), "unit edit/a: result is null"),
        ["4 report: a task count that is not its examples'"] = d => Report(FinishedRun(d, run => Sql(run, "UPDATE units SET result = replace(result, '\"count\":3', '\"count\":4') WHERE unit_id = 'tune/a'")), "unit tune/a: task copa: count 4 but 3"),
        ["4 report: an unknown kind"] = d => Report(FinishedRun(d, run => Sql(run, "UPDATE units SET kind = 'frob' WHERE unit_id = 'edit/a'")), "unit edit/a: unknown kind \"frob\""),
        ["4 report: a row's seed that is not its result's"] = d => Report(FinishedRun(d, run => Sql(run, "UPDATE units SET seed = 7 WHERE unit_id = 'edit/a'")), "unit edit/a: result's seed 1 is not the row's seed 7"),

        // Class 5: what the plan can check is checked before the run folder exists (tiny_gpt2 has 64 positions).
        ["5 a paraphrase longer than the model's positions"] = d => LongPrompt(d, r => r["paraphrase_prompts"]![0] = Words(80) + " Angola is in", "its paraphrase prompt is"),
        ["5 a neighbourhood prompt longer than the model's positions"] = d => LongPrompt(d, r => r["neighborhood_prompts"]![1] = Words(70), "its neighbourhood prompt is"),
        ["5 a rewrite prompt longer than the model's positions"] = d => LongPrompt(d, r => r["requested_rewrite"]!["prompt"] = Words(90) + " {} is located in", "its rewrite prompt is"),

        // Class 6: one writer per folder (the test holds the lock, as a running kvlab would).
        ["6 study on a folder in use"] = d => Locked(Study(d, d.File("run"), $"is in use by kvlab (pid {Environment.ProcessId})")),
        ["6 study --fresh on a folder in use moves nothing"] = d => Locked(Study(d, FinishedRun(d, _ => { }), $"is in use by kvlab (pid {Environment.ProcessId})", "--fresh")),
        ["6 report on a folder in use"] = d => Locked(Report(FinishedRun(d, _ => { }), $"is in use by kvlab (pid {Environment.ProcessId})")),

        // Class 7: the report replaces its folder whole, so it never writes into a folder it would lose files of.
        ["7 report into a folder holding other files"] = d =>
        {
            string run = FinishedRun(d, _ => { }), other = d.File("mine");
            Directory.CreateDirectory(other);
            File.WriteAllText(Path.Combine(other, "notes.txt"), "mine");
            return new(["report", run, "--out", other], ExitCodes.BadInput, "holds notes.txt, which is not part of a kvlab report", [run, other]);
        },
        ["7 report into a file"] = d =>
        {
            string run = FinishedRun(d, _ => { }), file = d.File("a-file");
            File.WriteAllText(file, "x");
            return new(["report", run, "--out", file], ExitCodes.BadInput, "a-file: is a file, not a report folder", [run, file]);
        },
        ["7 report of a folder that is not a run"] = d =>
        {
            Directory.CreateDirectory(d.File("empty"));
            return new(["report", d.File("empty")], ExitCodes.BadInput, "empty: no results.db here", [d.File("empty")]);
        },

        // Class 8: bad input no loader caught.
        ["8 CounterFact with a key twice"] = d => EditData(d, Encoding.UTF8.GetBytes("""[{"case_id": 1, "case_id": 2, "requested_rewrite": {}}]"""), "a key appears twice in one object (key 'case_id'"),
        ["8 CounterFact with invalid UTF-8"] = d => EditData(d, [.. "[{\"case_id\": 1, \"requested_rewrite\": {\"subject\": \""u8, 0xC3, 0x28, .. "\"}}]"u8], "not valid UTF-8 (byte 0xC3"),
        ["8 COPA with a key twice"] = d => Task(d, """{"premise": "p", "premise": "q", "choice1": "a", "choice2": "b", "question": "cause", "label": 0}""", "line 1: a key appears twice"),
        ["8 COPA asking for neither cause nor effect"] = d => Task(d, """{"premise": "It rained.", "choice1": "a", "choice2": "b", "question": "because", "label": 0}""", "line 1: \"question\" must be cause or effect"),
        ["8 COPA with an empty premise"] = d => Task(d, """{"premise": " ", "choice1": "a", "choice2": "b", "question": "cause", "label": 0}""", "line 1: \"premise\" is empty"),
        ["8 COPA with invalid UTF-8"] = d => Task(d, Encoding.UTF8.GetString("{\"premise\": \"x\"}"u8) + "\uFFFF", "not valid UTF-8", invalidTail: true),
        ["8 generate -t NaN"] = _ => new(["generate", "-m", Gpt2, "-z", Tok, "-t", "NaN"], ExitCodes.Usage, "--temperature NaN", []),
        ["8 generate -p NaN"] = _ => new(["generate", "-m", Gpt2, "-z", Tok, "-p", "NaN"], ExitCodes.Usage, "--top-p NaN", []),
        ["8 edit --top -1"] = _ => new(["edit", "-m", Gpt2, "-z", Tok, "-i", "{} is in", "--subject", "Paris", "--target-new", "Rome", "--top", "-1"], ExitCodes.Usage, "--top -1", []),
        ["8 inspect with an empty prompt"] = _ => new(["inspect", "-m", Gpt2, "-z", Tok, "-i", ""], ExitCodes.Usage, "--prompt is empty", []),
        ["8 tune --lr NaN"] = d => Tune(d, "--lr", "NaN", "--lr NaN"),
        ["8 tune --alpha NaN"] = d => Tune(d, "--alpha", "NaN", "--alpha NaN"),
        ["8 tune --dropout NaN"] = d => Tune(d, "--dropout", "NaN", "--dropout NaN"),

        // Class 9: nothing blocks or runs without end.
        ["9 a FIFO as model.safetensors"] = d => Generate(ModelCopy(d, _ => { }, fifo: "model.safetensors"), "not a regular file"),
        ["9 a FIFO as config.json"] = d => Generate(ModelCopy(d, _ => { }, fifo: "config.json"), "not a regular file"),
        ["9 n_positions 2147483647"] = d => Generate(ModelCopy(d, c => c["n_positions"] = int.MaxValue), "a context of 2,147,483,647 positions"),
    };

    public static TheoryData<string> Names() => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(Names))]
    public void BreakerGetsItsExitCodeAndOneLineAndChangesNothing(string name)
    {
        using var dir = new TempDir();
        var breaker = Cases[name](dir);
        var before = breaker.Inputs.ToDictionary(p => p, Snapshot);
        RunFolderLock? held = LockedFolder is string locked ? RunFolderLock.Acquire(locked) : null;
        LockedFolder = null;
        try
        {
            var (code, stdout, stderr) = Kvlab.Run(breaker.Args);
            Assert.True(code == breaker.Code, $"exit {code}, expected {breaker.Code}: {stderr}");
            Assert.Equal("", stdout);
            var lines = stderr.TrimEnd('\n').Split('\n');
            Assert.True(lines.Length == 1, stderr);
            Assert.True(lines[0].Contains(breaker.Names, StringComparison.Ordinal), $"\"{breaker.Names}\" not in: {lines[0]}");
            foreach (var (path, snapshot) in before) Assert.Equal(snapshot, Snapshot(path));
            if (breaker.NoFolder is not null) Assert.False(Directory.Exists(breaker.NoFolder), $"{breaker.NoFolder} was left behind");
        }
        finally { held?.Dispose(); }
    }

    // The folder a "6" case wants held while the command runs (set by Locked, taken by the test).
    [ThreadStatic] private static string? LockedFolder;

    private static Breaker Locked(Breaker b)
    {
        LockedFolder = b.Args[Array.IndexOf(b.Args, "--out") is int i and >= 0 ? i + 1 : 1];
        Directory.CreateDirectory(LockedFolder);
        return b with { Inputs = [.. b.Inputs.Append(LockedFolder).Distinct()] };
    }

    private static string Db(string run) => Path.Combine(run, ResultsStore.FileName);

    private static void Sql(string run, string sql)
    {
        using var db = new SqliteConnection($"Data Source={Db(run)};Pooling=False");
        db.Open();
        using var cmd = db.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    /// <summary>Overwrites the units table's root page with noise: integrity_check (or the open itself) fails.</summary>
    private static void Corrupt(string run)
    {
        long root;
        using (var db = new SqliteConnection($"Data Source={Db(run)};Pooling=False"))
        {
            db.Open();
            using var cmd = db.CreateCommand();
            cmd.CommandText = "SELECT rootpage FROM sqlite_master WHERE name = 'units'";
            root = (long)cmd.ExecuteScalar()!;
        }
        using var file = new FileStream(Db(run), FileMode.Open, FileAccess.Write);
        file.Position = (root - 1) * 4096 + 8;
        file.Write(Enumerable.Range(0, 1000).Select(i => (byte)(i * 37 + 11)).ToArray());
    }

    /// <summary>A finished run folder of the fixture study's name: a store with an edit and a tune unit, report/ and adapters/, then <paramref name="damage"/>.</summary>
    private static string FinishedRun(TempDir dir, Action<string> damage)
    {
        string run = dir.File("run");
        using (var store = ResultsStore.Open(run, create: true))
        {
            store.Bind(StudySpec.Default(), "fp");
            var edit = new EditUnitResult
            {
                Method = "FT", Side = "keys", Layers = "1", Seed = 1, Mode = "single", CaseId = "a",
                Pre = new() { ES = 0 }, Post = new() { ES = 100 }, Seconds = 0.5,
            };
            var tune = new TuneUnitResult { Label = "+keys", Targets = ["c_fc"], Seed = 1, Tasks = [new TaskOutcome("copa", 3, 2 / 3.0, 0.5, null, [true, true, false])] };
            store.Add([Unit("edit/a", "edit", System.Text.Json.JsonSerializer.Serialize(edit, StudyRunner.Json)),
                Unit("tune/a", "tune", System.Text.Json.JsonSerializer.Serialize(tune, StudyRunner.Json))]);
        }
        Directory.CreateDirectory(Path.Combine(run, "report"));
        File.WriteAllText(Path.Combine(run, "report", "report.md"), "# an earlier report\n");
        Directory.CreateDirectory(Path.Combine(run, "adapters", "tune_a"));
        File.WriteAllText(Path.Combine(run, "adapters", "tune_a", "adapter_config.json"), "{}");
        damage(run);
        return run;
    }

    private static UnitRecord Unit(string id, string kind, string result) =>
        new(id, kind, "g", 1, "{}", result, 0.5, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "host", "v", "");

    /// <summary><c>kvlab study</c> of the editing-only fixture study on <paramref name="run"/>.</summary>
    private static Breaker Study(TempDir dir, string run, string names, params string[] extra)
    {
        var study = Studies.FixtureStudy();
        study.Remove("tuning");
        study.Remove("tasks");
        string file = Studies.Write(dir, study);
        return new(["study", "--study", file, "--out", run, .. extra], ExitCodes.BadInput, names, [file, run]);
    }

    private static Breaker Report(string run, string names) => new(["report", run], ExitCodes.BadInput, names, [run]);

    private static Breaker EditData(TempDir dir, byte[] data, string names)
    {
        string file = dir.File("counterfact.json");
        File.WriteAllBytes(file, data);
        var study = Studies.FixtureStudy();
        study.Remove("tuning");
        study.Remove("tasks");
        study["edit_data"] = file;
        string studyFile = Studies.Write(dir, study);
        return new(["study", "--study", studyFile, "--out", dir.File("run")], ExitCodes.BadInput, $"{file}: {names}", [file, studyFile], dir.File("run"));
    }

    private static string Words(int n) => string.Join(' ', Enumerable.Range(0, n).Select(i => i % 2 == 0 ? "long" : "prompt"));

    /// <summary>The first two CounterFact records, the first changed by <paramref name="change"/>, as the fixture study's edit data.</summary>
    private static Breaker LongPrompt(TempDir dir, Action<JsonNode> change, string names)
    {
        var records = JsonNode.Parse(File.ReadAllText(Studies.CounterFact))!.AsArray();
        var two = new JsonArray(records[0]!.DeepClone(), records[1]!.DeepClone());
        change(two[0]!);
        var breaker = EditData(dir, Encoding.UTF8.GetBytes(two.ToJsonString()), $"case {two[0]!["case_id"]}: {names}");
        return breaker;
    }

    private static Breaker Task(TempDir dir, string line, string names, bool invalidTail = false)
    {
        string folder = dir.File("copa"), file = Path.Combine(folder, "train.jsonl");
        Directory.CreateDirectory(folder);
        byte[] bytes = Encoding.UTF8.GetBytes(invalidTail ? line.TrimEnd('\uFFFF') : line + "\n");
        if (invalidTail) bytes = [.. bytes, 0xFF, (byte)'\n'];  // a byte that is never UTF-8
        File.WriteAllBytes(file, bytes);
        var study = Studies.FixtureStudy();
        study.Remove("editing");
        study.Remove("edit_data");
        study["tasks"] = new JsonObject { ["copa"] = folder };
        string studyFile = Studies.Write(dir, study);
        return new(["study", "--study", studyFile, "--out", dir.File("run")], ExitCodes.BadInput, $"{file}: {names}", [folder, studyFile], dir.File("run"));
    }

    private static Breaker Tune(TempDir dir, string option, string value, string names) =>
        new(["tune", "-m", Gpt2, "-z", Tok, "--task", $"copa={Copa}", "--out", dir.File("out"), option, value], ExitCodes.Usage, names, [], dir.File("out"));

    /// <summary><c>kvlab edit-eval</c> (FT) of two CounterFact records, changed by <paramref name="second"/> and <paramref name="first"/>.</summary>
    private static Breaker EditEval(TempDir dir, Action<JsonArray> second, Action<JsonArray> first, string names)
    {
        var records = JsonNode.Parse(File.ReadAllText(Studies.CounterFact))!.AsArray();
        var two = new JsonArray(records[0]!.DeepClone(), records[1]!.DeepClone());
        second(two);
        first(two);
        string file = dir.File("counterfact.json");
        File.WriteAllText(file, two.ToJsonString());
        return new(["edit-eval", "-m", Gpt2, "-z", Tok, "--method", "ft", "--dataset", file, "--out", dir.File("out")], ExitCodes.BadInput, names, [file], dir.File("out"));
    }

    private static Breaker StudyFile(TempDir dir, string name, string text, string names)
    {
        string file = dir.File(name);
        File.WriteAllText(file, text);
        return new(["study", "--study", file, "--out", dir.File("run")], ExitCodes.BadInput, names, [file], dir.File("run"));
    }

    /// <summary>"Billion laughs": 9 levels of 9 aliases each, under 1 KB, would expand to 9⁹ nodes.</summary>
    private static string AliasBomb()
    {
        var yaml = new StringBuilder("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (int i = 1; i <= 9; i++) yaml.Append($"a{i}: &a{i} [{string.Join(", ", Enumerable.Repeat($"*a{i - 1}", 9))}]\n");
        return yaml.ToString();
    }

    /// <summary>A copy of tiny_gpt2 whose config.json is changed by <paramref name="config"/>; <paramref name="fifo"/> names a file replaced by a FIFO.</summary>
    private static string ModelCopy(TempDir dir, Action<JsonObject> config, string? fifo = null)
    {
        string model = dir.File("model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(Gpt2)) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "config.json")))!.AsObject();
        config(json);
        File.WriteAllText(Path.Combine(model, "config.json"), json.ToJsonString());
        if (fifo is not null)
        {
            File.Delete(Path.Combine(model, fifo));
            using var mkfifo = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("mkfifo", [Path.Combine(model, fifo)]) { UseShellExecute = false })!;
            mkfifo.WaitForExit();
            Assert.Equal(0, mkfifo.ExitCode);
        }
        return model;
    }

    /// <summary><c>kvlab generate</c> on <paramref name="model"/>; its regular files must stay as they were (a FIFO cannot be hashed: reading it blocks).</summary>
    private static Breaker Generate(string model, string names) => new(["generate", "-m", model, "-z", Tok, "-i", "Hello", "-n", "2"], ExitCodes.BadInput, names,
        [.. Directory.GetFiles(model).Where(f => new FileInfo(f).Length > 0)]);

    /// <summary>Every file under a path (or the file itself) with its SHA-256; kvlab's lock files are left out.</summary>
    private static string Snapshot(string path)
    {
        if (File.Exists(path)) return Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
        if (!Directory.Exists(path)) return "(absent)";
        return string.Join("\n", Directory.EnumerateFileSystemEntries(path, "*", SearchOption.AllDirectories)
            .Where(f => !RunFolderLock.IsLockFile(Path.GetFileName(f)))
            .Order(StringComparer.Ordinal)
            .Select(f => $"{Path.GetRelativePath(path, f)} {(File.Exists(f) ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))) : "dir")}"));
    }
}
