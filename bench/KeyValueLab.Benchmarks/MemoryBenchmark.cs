using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Benchmarks;

/// <summary>
/// The paper's own models on this machine (issue 12): each row writes a checkpoint with the real shapes and synthetic
/// weights (N(0, 0.02), norms 1, biases 0) with the project's own writer into a temporary folder, then runs the work in a
/// child process (so its peak RSS, VmHWM, is the work's own) and prints the peak against the row's goal, the time against
/// the FLOP-bound time at the same child's measured matmul rate, and deletes the folder.
///   memory [--row tune-llama|ft-gptj|rome-llama|ft-gpt2xl|all] [--layers N] [--steps S] [--folder DIR] [--no-checkpointing] [--phases] [--write-only]
/// --layers cuts every model to its first N layers (the published widths, vocabularies and heads stay). --folder keeps the
/// checkpoint in DIR (written when DIR has none) for the next run of the same row; --no-checkpointing trains the Llama row (and edits the FT rows)
/// without gradient checkpointing; --write-only (with --folder) writes the checkpoint and stops; --phases prints, before each FT edit, RSS after one step's forward and backward pass.
/// </summary>
internal static class MemoryBenchmark
{
    private const string ResultPrefix = "result:";

    private sealed record Row(string Name, string Shape, string DType, int Layers, string Work, string ConfigJson);

    private static readonly Row[] Rows =
    [
        new("tune-llama", "Llama-2-7B", SafetensorsDType.BF16, 32, "tune --4bit, q,v,keys:up, one optimizer step of 1 × 128 tokens",
            """{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,"max_position_embeddings":4096,"rms_norm_eps":1e-5,"tie_word_embeddings":false}"""),
        new("ft-gptj", "GPT-J 6B", SafetensorsDType.F16, 28, "one FT edit of one layer's keys, and one of its values",
            """{"model_type":"gptj","vocab_size":50400,"n_positions":2048,"n_embd":4096,"n_layer":28,"n_head":16,"rotary_dim":64,"n_inner":16384,"activation_function":"gelu_new","layer_norm_epsilon":1e-5,"tie_word_embeddings":false}"""),
        new("rome-llama", "Llama-2-7B", SafetensorsDType.BF16, 32, "ROME at layer 5 with statistics from 100 text samples of 64 tokens, no generated context templates",
            """{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,"max_position_embeddings":4096,"rms_norm_eps":1e-5,"tie_word_embeddings":false}"""),
        new("ft-gpt2xl", "GPT-2 XL", SafetensorsDType.F32, 48, "one FT edit (values)",
            """{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":1600,"n_layer":48,"n_head":25,"activation_function":"gelu_new","layer_norm_epsilon":1e-5,"tie_word_embeddings":true}"""),
    ];

    private static readonly EditRequest Request = new("bench", "The mother tongue of {} is", "Danielle Darrieux", "English", "French");

    public static int Run(string[] args)
    {
        if (Option(args, "--child") is string child)
            return RunChild(child, Option(args, "--checkpoint")!, Int(args, "--steps", 3), checkpointing: !args.Contains("--no-checkpointing"), phases: args.Contains("--phases"));
        string which = Option(args, "--row") ?? "all";
        var rows = which == "all" ? Rows : Rows.Where(r => r.Name == which).ToArray();
        if (rows.Length == 0)
        {
            Console.Error.WriteLine($"memory: --row is all or one of {string.Join(", ", Rows.Select(r => r.Name))}");
            return 2;
        }
        int? layers = int.TryParse(Option(args, "--layers"), out int n) ? n : null;
        var summary = new List<string>();
        foreach (var row in rows)
        {
            // --folder keeps the checkpoint for the next run (one row only); it is written when the folder has none.
            string? kept = rows.Length == 1 ? Option(args, "--folder") : null;
            string folder = kept ?? Directory.CreateTempSubdirectory("kvlab-bench-").FullName;
            try
            {
                int used = Math.Min(layers ?? row.Layers, row.Layers);
                var clock = Stopwatch.StartNew();
                long stored;
                if (kept is not null && File.Exists(Path.Combine(kept, "config.json")))
                {
                    stored = Directory.GetFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);
                    Console.WriteLine($"{row.Name}: reusing {folder} ({stored / 1e9:F2} GB; --layers must match it)");
                }
                else
                {
                    Directory.CreateDirectory(folder);
                    stored = WriteCheckpoint(row, used, folder);
                    Console.WriteLine($"{row.Name}: wrote {row.Shape} shape, {used} of {row.Layers} layers, {row.DType}: {stored / 1e9:F2} GB in {clock.Elapsed.TotalSeconds:F0} s");
                }
                if (kept is not null && args.Contains("--write-only")) continue;
                var result = RunInChild(row.Name, folder, args);
                if (result is null) return 1;
                summary.Add(Summarise(row, used, stored, result));
            }
            finally
            {
                if (kept is null) Directory.Delete(folder, recursive: true);
            }
        }
        Console.WriteLine();
        foreach (string line in summary) Console.WriteLine(line);
        return 0;
    }

    private static string Summarise(Row row, int layers, long stored, Dictionary<string, double> r)
    {
        var inv = CultureInfo.InvariantCulture;
        double peak = r["peak_rss"];
        string head = string.Create(inv, $"{row.Shape} {layers}/{row.Layers} layers ({row.DType}, {stored / 1e9:F2} GB stored), {row.Work}: peak RSS {peak / 1e9:F2} GB");
        return row.Name switch
        {
            "tune-llama" => string.Create(inv, $"{head} (goal ≤ 6 GB at 32 layers); load {r["load_s"]:F0} s, step {r["work_s"]:F1} s"),
            "ft-gptj" => string.Create(inv,
                $"{head} = {peak / stored:F3} × stored (goal ≤ 1.15 × stored + 2 GB = {(1.15 * stored + 2e9) / 1e9:F2} GB); " +
                $"keys {r["keys_s"]:F1} s = {r["keys_s"] / r["keys_ideal_s"]:F2} × FLOP-bound, values {r["values_s"]:F1} s = {r["values_s"] / r["values_ideal_s"]:F2} × FLOP-bound (goal ≤ 2.0) " +
                $"at {r["keys_matmul_gflops"]:F0} and {r["values_matmul_gflops"]:F0} GFLOP/s; in CPU-s {r["keys_cpu_s"]:F1} = {r["keys_cpu_s"] / r["keys_ideal_cpu_s"]:F2} × and {r["values_cpu_s"]:F1} = {r["values_cpu_s"] / r["values_ideal_cpu_s"]:F2} × " +
                $"at {r["keys_matmul_gflops_per_cpu_s"]:F0} and {r["values_matmul_gflops_per_cpu_s"]:F0} GFLOP per CPU-s; of which matmul {r["keys_ideal_s"]:F1} and {r["values_ideal_s"]:F1} s, widening ≈ {r["widen_keys_s"]:F1} and {r["widen_values_s"]:F1} s " +
                $"({r["widen_keys_cpu_s"]:F1} and {r["widen_values_cpu_s"]:F1} CPU-s)"),
            "rome-llama" => string.Create(inv,
                $"{head} = {peak / stored:F3} × stored (goal ≤ 1.15 × stored + 2 GB = {(1.15 * stored + 2e9) / 1e9:F2} GB); statistics {r["stats_s"]:F0} s, edit {r["edit_s"]:F0} s"),
            _ => string.Create(inv,
                $"{head} = {peak / stored:F3} × stored (goal ≤ 1.1); edit {r["values_s"]:F1} s = {r["values_s"] / r["values_ideal_s"]:F2} × FLOP-bound (goal ≤ 1.3) at {r["values_matmul_gflops"]:F0} GFLOP/s, " +
                $"{r["values_cpu_s"]:F1} CPU-s = {r["values_cpu_s"] / r["values_ideal_cpu_s"]:F2} × at {r["values_matmul_gflops_per_cpu_s"]:F0} GFLOP per CPU-s; recomputation (checkpointing) {r["values_recompute_s"]:F1} s at the matmul rate"),
        };
    }

    /// <summary>Writes the row's checkpoint tensor by tensor (each generated only while it is written); returns the bytes of its safetensors files.</summary>
    private static long WriteCheckpoint(Row row, int layers, string folder)
    {
        var config = (JsonObject)JsonNode.Parse(row.ConfigJson)!;
        config[config.ContainsKey("n_layer") ? "n_layer" : "num_hidden_layers"] = layers;
        using var meta = ModelLoader.CreateOnMeta(Architectures.ParseConfig(config, "config.json"));
        int seed = 0;
        var tensors = ModelLoader.CheckpointTensors(meta).Select(t =>
        {
            int s = seed++;
            return TensorToSave.Lazy(t.Name, t.Shape, row.DType, () =>
            {
                var dtype = SafetensorsDType.ToScalarType(row.DType);
                if (t.Shape.Length == 1) return t.Name.EndsWith(".bias", StringComparison.Ordinal) ? zeros(t.Shape, dtype) : ones(t.Shape, dtype);
                return Synthetic(t.Shape, dtype, (ulong)s);
            });
        }).ToList();
        HfCheckpointWriter.Save(folder, config, tensors, maxShardBytes: 5_000_000_000);
        return Directory.GetFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);
    }

    /// <summary><paramref name="count"/> lines of <paramref name="length"/> lowercase letters and spaces (one token each for the bench's byte tokenizer).</summary>
    private static IEnumerable<string> SyntheticLines(int count, int length)
    {
        var random = new Random(12);
        const string letters = "abcdefghijklmnopqrstuvwxyz    ";
        for (int i = 0; i < count; i++) yield return "x" + new string([.. Enumerable.Range(0, length - 1).Select(_ => letters[random.Next(letters.Length)])]);
    }

    /// <summary>Values drawn per tensor from N(0, 0.02) in the stored dtype.</summary>
    /// <remarks>
    /// Drawing every value took ~4 min per 3.8 GB here; one block of <see cref="SyntheticBlock"/> values (a prime, so rows
    /// of any width start at different places in it and no two rows are equal) repeated over the tensor costs a copy. The
    /// values are Gaussian either way, which is what NF4's block statistics see.
    /// </remarks>
    private static Tensor Synthetic(long[] shape, ScalarType dtype, ulong seed)
    {
        using var scope = NewDisposeScope();
        long n = shape.Aggregate(1L, (a, b) => a * b);
        using var generator = new torch.Generator(seed);
        var block = randn(Math.Min(n, SyntheticBlock), generator: generator).mul_(0.02).to(dtype);
        long copies = (n + block.shape[0] - 1) / block.shape[0];
        return block.repeat(copies).narrow(0, 0, n).view(shape).MoveToOuterDisposeScope();
    }

    private const long SyntheticBlock = 1_048_573;

    private static Dictionary<string, double>? RunInChild(string row, string folder, string[] args)
    {
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("no process path");
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(typeof(MemoryBenchmark).Assembly.Location);
        foreach (string a in new[] { "memory", "--child", row, "--checkpoint", folder, "--steps", Option(args, "--steps") ?? "3" }) start.ArgumentList.Add(a);
        foreach (string flag in new[] { "--no-checkpointing", "--phases" })
            if (args.Contains(flag)) start.ArgumentList.Add(flag);
        using var child = Process.Start(start) ?? throw new InvalidOperationException($"could not start {self}");
        Dictionary<string, double>? result = null;
        while (child.StandardOutput.ReadLine() is string line)
        {
            Console.WriteLine("  " + line);
            if (line.StartsWith(ResultPrefix, StringComparison.Ordinal))
                result = line[ResultPrefix.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(kv => kv.Split('='))
                    .ToDictionary(kv => kv[0], kv => double.Parse(kv[1], CultureInfo.InvariantCulture));
        }
        child.WaitForExit();
        if (child.ExitCode == 0 && result is not null) return result;
        Console.Error.WriteLine($"memory benchmark: row {row} failed (exit code {child.ExitCode})");
        return null;
    }

    private static int RunChild(string row, string folder, int steps, bool checkpointing, bool phases)
    {
        var values = new Dictionary<string, double>();
        double matmul = RuntimeBenchmark.MatmulGflops(3);
        values["matmul_gflops"] = matmul;
        var clock = Stopwatch.StartNew();
        using var loaded = ModelLoader.Load(folder, new LoadOptions { FourBit = row == "tune-llama" });
        values["load_s"] = clock.Elapsed.TotalSeconds;
        var model = loaded.Model;
        var c = model.Config;
        Console.WriteLine($"loaded in {values["load_s"]:F1} s; RSS {ProcessMemory.ResidentBytes() / 1e9:F2} GB; {FrozenLinear.FrozenIn(model).Count()} frozen linears " +
                          $"holding {FrozenLinear.FrozenIn(model).Sum(f => FrozenLinear.WeightBytes(f.Linear)) / 1e9:F2} GB; fp32 matmul {matmul:F0} GFLOP/s");
        var tokenizer = new EditBenchmark.ByteTokenizer(c.VocabSize);
        clock.Restart();
        switch (row)
        {
            case "tune-llama":
            {
                using var lora = LoraModel.Attach(model, new LoraConfig { TargetModules = LoraConfig.ResolveTargets("q,v,keys:up", c.ModelType) }, seed: 1);
                lora.Training = true;
                // As QLoRA trains: each decoder layer recomputed in the backward pass, so the step holds one layer's activations
                // (otherwise ≈ 0.17 GB a layer at 128 tokens, measured at 2 and 4 layers: see docs/performance.md).
                model.GradientCheckpointing = checkpointing;
                using var optimizer = new AdamWOptimizer(lora.Parameters(), 2e-4);
                using var ids = randint(0, c.VocabSize, [1, 128], generator: new torch.Generator(7));
                TunePhases(model, optimizer, ids, lora, values);
                break;
            }
            case "rome-llama":
            {
                string cache = Directory.CreateTempSubdirectory("kvlab-bench-stats-").FullName;
                try
                {
                    // A text corpus of 100 lines (the statistics' forward pass then stops after layer 5; a generated corpus
                    // samples every token from the whole model: 64 passes per batch of 32).
                    string corpus = Path.Combine(cache, "corpus.txt");
                    File.WriteAllLines(corpus, SyntheticLines(100, 64));
                    // The prompt alone as context (no generated templates): ROME's 10 of 5 and 10 of 10 tokens are generated token
                    // by token through the whole model, 150 single-token forward passes, each widening every weight (≈ 1.9 s each at
                    // 2 layers on the loaded machine, so ≈ 30 s each at 32); they set the time, not the memory this row measures.
                    var hp = new LocateEditHyperparameters
                    {
                        Method = "ROME", Mom2Corpus = corpus, Mom2NSamples = 100, Mom2SampleTokens = 64, VNumGradSteps = 5, ContextTemplateLengthParams = [],
                    };
                    var stats = new SecondMoments(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, cache)
                    {
                        Progress = new Progress<WorkProgress>(p => Console.WriteLine($"statistics {p.Done}/{p.Total} ({p.Stage}) at {clock.Elapsed.TotalSeconds:F1} s")),
                        Notice = Console.WriteLine,
                    };
                    using var editor = new RomeEditor(hp, Math.Min(5, c.NumLayers - 1), stats);
                    editor.Prepare(model, tokenizer);
                    values["stats_s"] = clock.Elapsed.TotalSeconds;
                    Console.WriteLine($"statistics {values["stats_s"]:F1} s; RSS {ProcessMemory.ResidentBytes() / 1e9:F2} GB, peak so far {ProcessMemory.PeakResidentBytes() / 1e9:F2} GB");
                    var sw = Stopwatch.StartNew();
                    editor.Apply(model, tokenizer, [Request]);
                    values["edit_s"] = sw.Elapsed.TotalSeconds;
                    Console.WriteLine($"ROME edit {values["edit_s"]:F1} s");
                }
                finally { Directory.Delete(cache, recursive: true); }
                break;
            }
            default:
            {
                int layer = Math.Min(row == "ft-gptj" ? 5 : 17, c.NumLayers - 1);
                var prompt = EditPrompts.Build(model, tokenizer, Request.Prompt, Request.Subject, Request.TargetNew);
                int tokens = prompt.PromptIds.Length + prompt.TargetIds.Length - 1;
                // As the tune row: each layer above the edited one recomputed in the backward pass, where the architecture has it.
                bool recompute = checkpointing && model.SupportsGradientCheckpointing;
                model.GradientCheckpointing = recompute;
                // The first pass reads the mapped weights from the file (page faults, disk); the second is what a step's widening costs.
                var (coldWall, coldCpu) = WidenEverything(model);
                var (widenWall, widenCpu) = WidenEverything(model);
                Console.WriteLine($"gradient checkpointing {(recompute ? "on" : "off")}; widening every frozen weight once: {widenWall:F1} s ({widenCpu:F1} CPU-s), the first time (from the file) {coldWall:F1} s ({coldCpu:F1} CPU-s)");
                foreach (string side in row == "ft-gptj" ? new[] { "keys", "values" } : ["values"])
                {
                    var editor = new FineTuneEditor(new FtHyperparameters { Layers = [layer], Side = side, Steps = steps, EarlyStopLoss = -1 });
                    if (phases) StepPhases(model, editor, prompt, tokenizer.EosId ?? 0);
                    using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
                    // The machine is shared: the matmul rate is measured again right before and after the edit, per wall second and
                    // per CPU-second of the process; the FLOP-bound times use their means, so the edit's wall time and its CPU
                    // seconds each have a ratio (the CPU one does not count the time the process waited for a core).
                    double before = RuntimeBenchmark.MatmulGflops(3), beforeCpu = RuntimeBenchmark.MatmulGflopsPerCpuSecond(3);
                    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                    var sw = Stopwatch.StartNew();
                    editor.Apply(model, tokenizer, [Request]);
                    double wall = values[$"{side}_s"] = sw.Elapsed.TotalSeconds;
                    double cpuS = values[$"{side}_cpu_s"] = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
                    double rate = values[$"{side}_matmul_gflops"] = (before + RuntimeBenchmark.MatmulGflops(3)) / 2;
                    double cpuRate = values[$"{side}_matmul_gflops_per_cpu_s"] = (beforeCpu + RuntimeBenchmark.MatmulGflopsPerCpuSecond(3)) / 2;
                    snapshot.Restore(model);
                    double flop = steps * EditBenchmark.StepFlop(c, tokens, layer, side == "keys");
                    double ideal = values[$"{side}_ideal_s"] = flop / (rate * 1e9);
                    double idealCpu = values[$"{side}_ideal_cpu_s"] = flop / (cpuRate * 1e9);
                    // The recomputation is work the step does beyond its FLOP-bound count (the price of the memory it saves).
                    values[$"{side}_recompute_s"] = recompute ? steps * EditBenchmark.RecomputeFlop(c, tokens, layer) / (rate * 1e9) : 0;
                    // Each step widens every frozen weight in the forward pass and those above the edited layer again in the backward
                    // pass (and in the recomputation).
                    double passes = steps * (1 + (recompute ? 2 : 1) * (c.NumLayers - layer - 1.0) / c.NumLayers);
                    double widen = values[$"widen_{side}_s"] = passes * widenWall, widenC = values[$"widen_{side}_cpu_s"] = passes * widenCpu;
                    Console.WriteLine($"FT {side} at layer {layer}, {tokens} tokens, {steps} steps: {wall:F1} s = {wall / ideal:F2} × FLOP-bound at {rate:F0} GFLOP/s; " +
                                      $"{cpuS:F1} CPU-s = {cpuS / idealCpu:F2} × FLOP-bound at {cpuRate:F0} GFLOP per CPU-s; RSS after the restore {ProcessMemory.ResidentBytes() / 1e9:F2} GB, peak so far {ProcessMemory.PeakResidentBytes() / 1e9:F2} GB");
                    Console.WriteLine($"  split: matmul (FLOP-bound) {ideal:F1} s, recomputation {values[$"{side}_recompute_s"]:F1} s, widening ≈ {widen:F1} s ({passes:F2} passes), rest {wall - ideal - values[$"{side}_recompute_s"] - widen:F1} s; " +
                                      $"in CPU-s: matmul {idealCpu:F1}, widening ≈ {widenC:F1}, rest {cpuS - idealCpu - widenC - (recompute ? steps * EditBenchmark.RecomputeFlop(c, tokens, layer) / (cpuRate * 1e9) : 0):F1} (after the recomputation's)");
                }
                break;
            }
        }
        values["work_s"] = clock.Elapsed.TotalSeconds;
        values["peak_rss"] = ProcessMemory.PeakResidentBytes();
        Console.WriteLine($"work {values["work_s"]:F1} s; peak RSS {values["peak_rss"] / 1e9:F2} GB");
        Console.WriteLine(ResultPrefix + string.Join(" ", values.Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key}={kv.Value:R}"))));
        return 0;
    }

    /// <summary>One optimizer step as <see cref="LoraBenchmark.Step"/>, printing RSS after the forward pass, the backward pass and the update.</summary>
    private static void TunePhases(CausalLM model, AdamWOptimizer optimizer, Tensor ids, LoraModel lora, Dictionary<string, double> values)
    {
        using var scope = NewDisposeScope();
        optimizer.ZeroGrad();
        var logits = model.Forward(ids);
        var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, logits.shape[2]), ids[.., 1..].reshape(-1));
        values["forward_rss"] = ProcessMemory.ResidentBytes();
        values["forward_peak"] = ProcessMemory.PeakResidentBytes();
        loss.backward();
        values["backward_rss"] = ProcessMemory.ResidentBytes();
        values["backward_peak"] = ProcessMemory.PeakResidentBytes();
        GradientClipping.ClipGradNorm(lora.Parameters(), 0.3);
        optimizer.Step();
        Console.WriteLine($"RSS (peak so far) after forward {values["forward_rss"] / 1e9:F2} ({values["forward_peak"] / 1e9:F2}) GB, " +
                          $"after backward {values["backward_rss"] / 1e9:F2} ({values["backward_peak"] / 1e9:F2}) GB, after the update {ProcessMemory.ResidentBytes() / 1e9:F2} GB");
    }

    /// <summary>
    /// One FT step's forward and backward pass as <see cref="FineTuneEditor"/> runs it (no optimizer, weights unchanged),
    /// printing RSS after loading the edited matrix as a master, after the forward pass (autograd's saved tensors held) and
    /// after the backward pass (its gradient held).
    /// </summary>
    private static void StepPhases(CausalLM model, FineTuneEditor editor, EditPrompt prompt, int padId)
    {
        var memory = new Memory.FfnMemory(model);
        var weights = editor.Scope.Matrices(memory).Select(m => m.Weight).ToList();
        double rss0 = ProcessMemory.ResidentBytes();
        using (var frozen = new FrozenParameters(model, weights))
        using (var batch = new RewriteBatch([prompt], [], padId, model.Device))
        using (var scope = NewDisposeScope())
        {
            var loss = batch.Nll(batch.Forward(model));
            double forward = ProcessMemory.ResidentBytes();
            loss.backward();
            double backward = ProcessMemory.ResidentBytes();
            Console.WriteLine($"step phases: RSS with the master {rss0 / 1e9:F3} GB, after forward +{(forward - rss0) / 1e6:F0} MB, after backward +{(backward - rss0) / 1e6:F0} MB " +
                              $"(gradient {weights.Sum(w => w.NumberOfElements * 4) / 1e6:F0} MB); peak so far {ProcessMemory.PeakResidentBytes() / 1e9:F3} GB");
        }
        foreach (var w in weights) { w.grad?.Dispose(); w.grad = null; }
        Console.WriteLine($"step phases: RSS after it {ProcessMemory.ResidentBytes() / 1e9:F3} GB");
    }

    /// <summary>Wall and CPU seconds to widen every frozen weight of <paramref name="model"/> once, block by block into one buffer as a forward pass does.</summary>
    private static (double Wall, double Cpu) WidenEverything(CausalLM model)
    {
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        foreach (var (_, linear) in FrozenLinear.FrozenIn(model))
        {
            var w = FrozenLinear.Of(linear)!;
            using var buffer = empty(Math.Min(w.BlockRows, w.Shape[0]), w.Shape[1]);
            for (long start = 0; start < w.Shape[0]; start += w.BlockRows)
                using (var block = buffer.narrow(0, 0, Math.Min(w.BlockRows, w.Shape[0] - start))) w.WidenInto(start, block);
        }
        return (sw.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
    }

    private static int Int(string[] args, string name, int fallback) => int.TryParse(Option(args, name), out int v) ? v : fallback;

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
