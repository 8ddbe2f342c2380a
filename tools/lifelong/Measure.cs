#:project ../../src/KeyValueLab/KeyValueLab.csproj
#:property PublishAot=false
#:property JsonSerializerIsReflectionEnabledByDefault=true
// Lifelong editing on the built-in organism's CounterFact export (sequential-final), as in docs/editing.md.
//
//   dotnet run -c Release tools/lifelong/Measure.cs -- run METHOD N B M OUT.json [name=value ...]
//   dotnet run -c Release tools/lifelong/Measure.cs -- pair KEYS.json VALUES.json
//
// run: the first N records, edited in chunks of B with METHOD (alphaedit, memit, keyalphaedit, keymemit) at the
// organism's layers 0-1 with the built-in study's settings (fact_token last, statistics over the organism corpus,
// 1,000 samples), scored on the final model and every M edits; writes per-case scores and means with 95% bootstrap
// intervals. pair: paired differences (first − second) of ES, PS, NS and gen_* over the common cases.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Models;
using KeyValueLab.Native;
using KeyValueLab.Organism;
using KeyValueLab.Study.Report;
using KeyValueLab.Tokenization;

TorchRuntime.EnsureLoaded();
TorchSharp.torch.set_num_threads(1);
string[] Metrics = ["ES", "PS", "NS", "gen_es", "gen_ps", "gen_ns"];

if (args[0] == "pair")
{
    var a = JsonNode.Parse(File.ReadAllText(args[1]))!;
    var b = JsonNode.Parse(File.ReadAllText(args[2]))!;
    var bCases = b["cases"]!.AsArray().ToDictionary(c => c!["id"]!.GetValue<string>(), c => c!);
    Console.WriteLine($"{a["method"]} − {b["method"]}, {a["n"]} edits in chunks of {a["chunk"]} (sequential-final)");
    foreach (string m in Metrics)
    {
        var diffs = a["cases"]!.AsArray().Where(c => bCases.ContainsKey(c!["id"]!.GetValue<string>()) && c![m] is not null && bCases[c["id"]!.GetValue<string>()][m] is not null)
            .Select(c => c![m]!.GetValue<double>() - bCases[c["id"]!.GetValue<string>()][m]!.GetValue<double>()).ToList();
        var e = ReportStatistics.BootstrapMean(diffs, 2000);
        Console.WriteLine($"  {m}: {e.Value:+0.0;-0.0;0.0} [{e.Low:+0.0;-0.0;0.0}, {e.High:+0.0;-0.0;0.0}] over {diffs.Count} paired cases");
    }
    return;
}

string method = args[1];
int n = int.Parse(args[2]), chunk = int.Parse(args[3]), every = int.Parse(args[4]);
string outPath = args[5];
var build = OrganismBuilder.Build(OrganismSpec.Default());
using var loaded = ModelLoader.Load(build.ModelFolder);
var tokenizer = TokenizerLoader.Load(build.ModelFolder);
var cases = EditDatasets.Load(Path.Combine(build.DataFolder, "counterfact.json")).Take(n).ToList();
var overrides = new List<string> { "fact_token=\"last\"" };
overrides.AddRange(args.Skip(6));
var editor = EditorFactory.Create(loaded.Model, new EditorChoice
{
    Method = method, Layers = "0-1", Overrides = overrides, StatsCorpus = Path.Combine(build.DataFolder, "corpus.txt"), StatsSamples = 1000,
});
var evaluator = new CaseEvaluator(loaded.Model, tokenizer, new EvaluationOptions { GenerationPrompts = 0 });
var watch = Stopwatch.StartNew();
var result = SequentialEditing.Run(loaded.Model, tokenizer, editor, cases, SequentialProtocol.Final,
    new SequentialOptions { ChunkSize = chunk, CheckpointEvery = every, ScoreBeforeEdits = false }, evaluator);
double wall = watch.Elapsed.TotalSeconds;

static double? Get(SequentialCase c, string m) => m switch
{
    "ES" => c.Metrics.ES, "PS" => c.Metrics.PS, "NS" => c.Metrics.NS,
    "gen_es" => c.Generation?.GenES, "gen_ps" => c.Generation?.GenPS, _ => c.Generation?.GenNS,
};
JsonObject Means(IReadOnlyList<SequentialCase> scored)
{
    var o = new JsonObject();
    foreach (string m in Metrics)
    {
        var values = scored.Select(c => Get(c, m)).Where(v => v is not null).Select(v => v!.Value).ToList();
        var e = ReportStatistics.BootstrapMean(values, 2000);
        o[m] = new JsonArray(Math.Round(e.Value, 2), Math.Round(e.Low, 2), Math.Round(e.High, 2));
    }
    return o;
}
var json = new JsonObject
{
    ["method"] = editor.Method, ["side"] = editor.Scope.Side.ToString().ToLowerInvariant(), ["n"] = n, ["chunk"] = chunk,
    ["organism"] = build.Hash, ["hyperparameters"] = editor.Hyperparameters.DeepClone(),
    ["wall_seconds"] = Math.Round(wall, 1), ["edit_seconds"] = Math.Round(result.ChunkSeconds.Sum(), 1),
    ["last_chunk_seconds"] = Math.Round(result.ChunkSeconds[^1], 2),
    ["log"] = new JsonArray([.. result.Log.Select(l => JsonValue.Create(l))]),
    ["checkpoints"] = new JsonArray([.. result.Checkpoints.Select(cp => (JsonNode)new JsonObject { ["edits"] = cp.Edits, ["means"] = Means(cp.Cases) })]),
    ["final"] = Means(result.Cases),
    ["cases"] = new JsonArray([.. result.Cases.Select(c =>
    {
        var o = new JsonObject { ["id"] = c.Case.CaseId };
        foreach (string m in Metrics) o[m] = Get(c, m);
        return (JsonNode)o;
    })]),
};
File.WriteAllText(outPath, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"{editor.Method}: {n} edits, chunks of {chunk}: final {json["final"]!.ToJsonString()} ({wall:F0} s wall, {result.ChunkSeconds.Sum():F0} s editing)");
