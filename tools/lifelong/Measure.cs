#:project ../../src/KeyValueLab.Study/KeyValueLab.Study.csproj
#:project ../../src/KeyValueLab.Native/KeyValueLab.Native.csproj
#:property PublishAot=false
#:property JsonSerializerIsReflectionEnabledByDefault=true
// Lifelong editing on the built-in organism's CounterFact export (sequential-final), as in docs/editing.md.
//
//   dotnet run -c Release tools/lifelong/Measure.cs -- run METHOD N B M OUT.json [name=value ...]
//   dotnet run -c Release tools/lifelong/Measure.cs -- pair KEYS.json VALUES.json
//   dotnet run -c Release tools/lifelong/Measure.cs -- batches METHOD N B LAYERS [name=value ...]
//
// run: the first N records, edited in chunks of B with METHOD (alphaedit, memit, keyalphaedit, keymemit) at the
// organism's layers 0-1 with the built-in study's settings (fact_token last, statistics over the organism corpus,
// 1,000 samples), scored on the final model and every M edits; writes per-case scores and means with 95% bootstrap
// intervals. pair: paired differences (first − second) of ES, PS, NS and gen_* over the common cases. batches: the
// first N records in independent batches of B (each applied to the unedited model, then restored: batch mode; B = 1 is
// single mode) at LAYERS, teacher-forced ES/PS/NS means printed: one edit or one batch against Key-ROME, without lifelong effects.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Native;
using KeyValueLab.Organism;
using KeyValueLab.Statistics;
using KeyValueLab.Tokenization;

TorchRuntime.EnsureLoaded(CachePaths.Root);
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
        var e = Bootstrap.Mean(diffs, 2000);
        Console.WriteLine($"  {m}: {e.Value:+0.0;-0.0;0.0} [{e.Low:+0.0;-0.0;0.0}, {e.High:+0.0;-0.0;0.0}] over {diffs.Count} paired cases");
    }
    return;
}

if (args[0] == "batches")
{
    string m = args[1];
    int count = int.Parse(args[2]), size = int.Parse(args[3]);
    var organism = OrganismBuilder.Build(OrganismSpec.Default());
    using var model = ModelLoader.Load(organism.ModelFolder);
    var tok = TokenizerLoader.Load(organism.ModelFolder);
    var records = EditDatasets.Load(Path.Combine(organism.DataFolder, "counterfact.json")).Take(count).ToList();
    var ed = EditorFactory.Create(model.Model, new EditorChoice
    {
        Method = m, Layers = args[4], Overrides = HyperparameterOverrides.Parse(m, ["fact_token=\"last\"", .. args.Skip(5)]),
        StatsCorpus = Path.Combine(organism.DataFolder, "corpus.txt"), StatsSamples = 1000,
    });
    foreach (string line in ed.Prepare(model.Model, tok)) Console.WriteLine(line);
    var scorer = new CaseEvaluator(model.Model, tok, new EvaluationOptions { GenerationPrompts = 0 });
    using var snapshot = WeightSnapshot.Take(model.Model, ed.ParameterNames(model.Model));
    var post = new List<(CaseMetrics Metrics, double Margin)>();   // margin: L(o_true) − L(o_new) on the rewrite prompt, after
    var clock = Stopwatch.StartNew();
    foreach (var batch in records.Chunk(size))
        EditRun.EditBatch(model.Model, tok, ed, scorer, batch, batch, snapshot,
            (i, _, after, _) => post.Add((CaseMetrics.From(after, batch[i].Format), after.Rewrite.Average(p => p.LossTrue!.Value - p.LossNew))));
    string Mean(Func<(CaseMetrics Metrics, double Margin), double?> f)
    {
        var e = Bootstrap.Mean([.. post.Select(f).Where(v => v is not null).Select(v => v!.Value)], 2000);
        return $"{e.Value:0.00} [{e.Low:0.00}, {e.High:0.00}]";
    }
    Console.WriteLine($"{ed.Method} layers {args[4]} {string.Join(' ', args.Skip(5))}: {count} edits in batches of {size}: ES {Mean(c => c.Metrics.ES)} PS {Mean(c => c.Metrics.PS)} NS {Mean(c => c.Metrics.NS)} rewrite margin {Mean(c => c.Margin)} ({clock.Elapsed.TotalSeconds:F0} s)");
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
    Method = method, Layers = "0-1", Overrides = HyperparameterOverrides.Parse(method, overrides), StatsCorpus = Path.Combine(build.DataFolder, "corpus.txt"), StatsSamples = 1000,
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
        var e = Bootstrap.Mean(values, 2000);
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
