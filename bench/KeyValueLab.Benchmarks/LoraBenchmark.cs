using System.Diagnostics;
using System.Globalization;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Benchmarks;

/// <summary>
/// LoRA training speed and memory with an fp32 vs an NF4 base, on a random GPT-2-medium-shaped model (24 × 1024, vocab 50257),
/// stepping as <see cref="SftTrainer"/> does (our AdamW, grad-norm clip 0.3). Each base runs in a process of its own, since
/// peak RSS cannot be shared: it prints the resident bytes of the quantisable linears, process RSS after setup, peak RSS
/// during training (reset via /proc/self/clear_refs) and tokens/s. <c>--base both</c> (the default) starts one child process
/// per base, one after the other, and prints both results side by side with the NF4/fp32 ratios.
/// </summary>
internal static class LoraBenchmark
{
    private const string ResultPrefix = "result:";

    public const string Gpt2MediumConfig = """
        {"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":1024,"n_layer":24,"n_head":16,
         "activation_function":"gelu_new","layer_norm_epsilon":1e-5,"tie_word_embeddings":true}
        """;

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int mallopt(int param, int value);

    /// <summary>Runs fp32 and then NF4 in child processes (the same command line, <paramref name="args"/>, with each <c>--base</c>) and prints both and their ratios.</summary>
    public static int RunBoth(string[] args)
    {
        var results = new Dictionary<string, Dictionary<string, double>>();
        foreach (string kind in new[] { "fp32", "nf4" })
        {
            var result = RunChild(args, kind);
            if (result is null) return 1;
            results[kind] = result;
        }
        var (fp32, nf4) = (results["fp32"], results["nf4"]);
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine(string.Create(inv, $"LoRA training, {fp32["steps"]:F0} timed steps of {fp32["batch"]:F0}×{fp32["tokens"]:F0} tokens, both bases:"));
        Console.WriteLine($"  {"base",-5} {"resident linears",17} {"RSS after setup",16} {"peak RSS training",18} {"tokens/s",9}");
        foreach (var (kind, r) in results)
            Console.WriteLine(string.Create(inv, $"  {kind,-5} {r["linear_bytes"] / 1e6,14:N1} MB {r["setup_rss"] / 1e6,13:N0} MB {r["peak_rss"] / 1e6,15:N0} MB {r["tokens_per_s"],9:F2}"));
        Console.WriteLine(string.Create(inv, $"  NF4 / fp32: tokens/s {nf4["tokens_per_s"] / fp32["tokens_per_s"]:F3}×, peak RSS {nf4["peak_rss"] / fp32["peak_rss"]:F3}×, " +
                                             $"resident linears {nf4["linear_bytes"] / fp32["linear_bytes"]:F4}×"));
        return 0;
    }

    /// <summary>This program again with <c>--base kind</c>; echoes its output and returns its result line's values.</summary>
    private static Dictionary<string, double>? RunChild(string[] args, string kind)
    {
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("no process path");
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(typeof(LoraBenchmark).Assembly.Location);
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--base") { i++; continue; }
            start.ArgumentList.Add(args[i]);
        }
        start.ArgumentList.Add("--base");
        start.ArgumentList.Add(kind);
        using var child = Process.Start(start) ?? throw new InvalidOperationException($"could not start {self}");
        Dictionary<string, double>? result = null;
        while (child.StandardOutput.ReadLine() is string line)
        {
            Console.WriteLine(line);
            if (line.StartsWith(ResultPrefix, StringComparison.Ordinal))
                result = line[ResultPrefix.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)
                    .Select(kv => kv.Split('='))
                    .ToDictionary(kv => kv[0], kv => double.Parse(kv[1], CultureInfo.InvariantCulture));
        }
        child.WaitForExit();
        if (child.ExitCode != 0 || result is null)
        {
            Console.Error.WriteLine($"lora benchmark: the {kind} run failed (exit code {child.ExitCode})");
            return null;
        }
        return result;
    }

    public static void Run(string baseKind, int steps, int batch, int tokens, string targets, string? configJson)
    {
        // A fixed mmap threshold (glibc's is dynamic, up to 32 MB) so freed tensors go back to the OS and RSS tracks tensor memory.
        if (OperatingSystem.IsLinux()) mallopt(-3 /* M_MMAP_THRESHOLD */, 1 << 20);
        using var loaded = ModelLoader.Create(configJson ?? Gpt2MediumConfig, seed: 1);
        var model = loaded.Model;
        long linearFp32 = model.named_modules().Where(m => m.module is TorchSharp.Modules.Linear && m.name != "lm_head")
            .Sum(m => ((TorchSharp.Modules.Linear)m.module).weight!.NumberOfElements * 4L);
        var clock = Stopwatch.StartNew();
        using var nf4 = baseKind == "nf4" ? Nf4Base.Quantize(model) : null;
        double quantiseSeconds = clock.Elapsed.TotalSeconds;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        using var lora = LoraModel.Attach(model, new LoraConfig { TargetModules = LoraConfig.ResolveTargets(targets, model.Config.ModelType) }, seed: 1);
        lora.Training = true;
        Console.WriteLine($"base {baseKind}: linears {linearFp32 / 1e6:F1} MB fp32 → {(nf4?.Nf4Bytes ?? linearFp32) / 1e6:F1} MB resident " +
                          $"({(double)(nf4?.Nf4Bytes ?? linearFp32) / linearFp32:F4}×){(nf4 is null ? "" : $", quantised in {quantiseSeconds:F1} s")}");
        Console.WriteLine($"  {lora.TrainableSummary()}");
        Console.WriteLine($"  RSS after setup: {ProcessMemory.ResidentBytes() / 1e6:F0} MB");

        long setupRss = ProcessMemory.ResidentBytes();
        using var optimizer = new AdamWOptimizer(lora.Parameters(), 2e-4);
        var generator = new Generator(7);
        using var ids = randint(0, model.Config.VocabSize, [batch, tokens], generator: generator);
        // One warm-up step, then reset the peak and time the rest.
        Step(model, optimizer, ids, lora);
        ProcessMemory.ResetPeak();
        clock.Restart();
        for (int s = 0; s < steps; s++) Step(model, optimizer, ids, lora);
        double seconds = clock.Elapsed.TotalSeconds, tokensPerSecond = steps * batch * tokens / seconds;
        long peak = ProcessMemory.PeakResidentBytes();
        Console.WriteLine($"  {steps} steps of {batch}×{tokens} tokens: {tokensPerSecond:F2} tokens/s; peak RSS while training {peak / 1e6:F0} MB");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{ResultPrefix} tokens_per_s={tokensPerSecond:R} peak_rss={peak} setup_rss={setupRss} linear_bytes={nf4?.Nf4Bytes ?? linearFp32} steps={steps} batch={batch} tokens={tokens}"));
    }

    internal static void Step(CausalLM model, AdamWOptimizer optimizer, Tensor ids, LoraModel lora)
    {
        using var scope = NewDisposeScope();
        optimizer.ZeroGrad();
        var logits = model.Forward(ids);
        var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, logits.shape[2]), ids[.., 1..].reshape(-1));
        loss.backward();
        GradientClipping.ClipGradNorm(lora.Parameters(), 0.3);
        optimizer.Step();
    }
}
