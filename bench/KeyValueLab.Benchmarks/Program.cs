using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Native;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Benchmarks;

/// <summary>
/// Speed checks that print ratios measured within one run (the machine is shared and noisy, so
/// absolute numbers drift; a ratio to the same run's matmul rate does not).
///   runtime [--stories DIR]   forward GFLOP/s of a GPT-2-small-shaped model ÷ fp32 matmul GFLOP/s,
///                             and greedy tokens/s on stories260K when DIR (with stories260K.bin, tok512.bin) is given
///   edit [--steps N --layer L] time per FT edit on keys vs values of a GPT-2-medium-shaped model (one request,
///                             fixed steps), each ÷ the time its floating-point work takes at the measured matmul rate
///   memory [--row R --layers N] the paper's models at real widths from a checkpoint written with synthetic weights: peak RSS
///                             and time against the goals of issue 12 (see MemoryBenchmark)
///   lifelong [--n B --history N --kept F] AlphaEdit's and Key-AlphaEdit's per-layer update at GPT-2 XL shape: seconds per
///                             edit, ratio to the matmul rate, bytes of P and the key store (see LifelongBenchmark)
///   bdn                       the same forward and matmul under BenchmarkDotNet (slower, with statistics)
///   lora [--base both|fp32|nf4 --steps N --batch B --tokens T --targets q,v --config FILE]
///                             LoRA training tokens/s and peak memory on a GPT-2-medium-shaped random model; "both"
///                             (default) runs each base in a child process and prints the NF4/fp32 ratios
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        TorchRuntime.EnsureLoaded(CachePaths.Root);
        string mode = args.Length > 0 ? args[0] : "runtime";
        if (mode == "bdn")
        {
            BenchmarkRunner.Run<ForwardBenchmarks>(args: args[1..]);
            return 0;
        }
        if (mode == "lora")
        {
            string? config = Option(args, "--config");
            string baseKind = Option(args, "--base") ?? "both";
            if (baseKind == "both") return LoraBenchmark.RunBoth(args);
            if (baseKind is not ("fp32" or "nf4"))
            {
                Console.Error.WriteLine($"lora: --base is both, fp32 or nf4, not {baseKind}");
                return 2;
            }
            LoraBenchmark.Run(baseKind, Int(args, "--steps", 3), Int(args, "--batch", 1), Int(args, "--tokens", 128),
                Option(args, "--targets") ?? "c_attn,keys", config is null ? null : File.ReadAllText(config));
            return 0;
        }
        if (mode == "memory") return MemoryBenchmark.Run(args[1..]);
        if (mode == "lifelong") return LifelongBenchmark.Run(args[1..]);
        if (mode == "edit")
        {
            EditBenchmark.Run(Int(args, "--steps", 10), Int(args, "--layer", 12), Int(args, "--repeats", 3));
            return 0;
        }
        if (mode != "runtime")
        {
            Console.Error.WriteLine("usage: KeyValueLab.Benchmarks [runtime [--stories DIR] | edit [--steps N] [--layer L] | lora [--base both|fp32|nf4] | memory [--row R] [--layers N] | lifelong [--n B] [--history N] [--kept F] | bdn]");
            return 2;
        }
        string? stories = Option(args, "--stories");
        int repeats = int.TryParse(Option(args, "--repeats"), out int r) ? r : 5;
        RuntimeBenchmark.Run(stories, repeats);
        return 0;
    }

    private static int Int(string[] args, string name, int fallback) => int.TryParse(Option(args, name), out int v) ? v : fallback;

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

internal static class RuntimeBenchmark
{
    /// <summary>GPT-2 small (124M) shape: 12 layers × 768, 12 heads, vocab 50257; random weights.</summary>
    public const string Gpt2SmallConfig = """
        {"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":12,"n_head":12,
         "activation_function":"gelu_new","layer_norm_epsilon":1e-5,"tie_word_embeddings":true}
        """;

    public const int Batch = 4, Tokens = 64;

    public static void Run(string? storiesDir, int repeats)
    {
        Console.WriteLine($"torch threads: {torch.get_num_threads()}, processors: {Environment.ProcessorCount}");
        using var loaded = ModelLoader.Create(Gpt2SmallConfig, seed: 0);
        var model = loaded.Model;
        model.eval();
        double flop = ForwardFlop(model.Config, Batch, Tokens);

        double matmul = MatmulGflops(repeats);
        double forwardSeconds = Best(repeats, () => ForwardOnce(model), out _);
        double forward = flop / forwardSeconds / 1e9;
        Console.WriteLine($"fp32 matmul 1024x1024x1024: {matmul,8:F1} GFLOP/s");
        Console.WriteLine($"GPT-2-small forward (batch {Batch} x {Tokens} tokens, {flop / 1e9:F2} GFLOP): {forwardSeconds * 1e3:F1} ms = {forward,8:F1} GFLOP/s");
        Console.WriteLine($"ratio forward / matmul: {forward / matmul:F3} (target >= 0.80)");

        if (storiesDir is not null) GenerationRate(storiesDir, repeats);
    }

    /// <summary>
    /// Multiply-adds ×2 of one forward pass: q,k,v,o and the two MLP matrices per token, the attention
    /// scores and weighted sum over the full T×T square (as scaled_dot_product_attention computes them),
    /// and the unembedding.
    /// </summary>
    public static double ForwardFlop(ModelConfig c, int batch, int tokens)
    {
        double d = c.HiddenSize, ff = c.IntermediateSize, perToken = 4 * d * d + 2 * d * ff;
        double attention = 2.0 * tokens * tokens * d; // QKᵀ and AV per sequence and layer
        double layers = c.NumLayers * (batch * tokens * perToken + batch * attention);
        return 2 * (layers + (double)batch * tokens * d * c.VocabSize);
    }

    /// <summary>fp32 GFLOP/s of the best of <paramref name="repeats"/> 1024³ matmuls: the rate every benchmark prints beside its own figures.</summary>
    public static double MatmulGflops(int repeats) => 2.0 * 1024 * 1024 * 1024 / Best(repeats, MatmulOnce, out _) / 1e9;

    /// <summary>
    /// GFLOP per CPU-second of the process (all its threads) of a 1024³ fp32 matmul, best of <paramref name="repeats"/> runs of
    /// 8 products: on a shared machine a process is descheduled for part of its wall time, and this rate does not count that.
    /// </summary>
    public static double MatmulGflopsPerCpuSecond(int repeats)
    {
        using var scope = NewDisposeScope();
        var a = randn(1024, 1024);
        var b = randn(1024, 1024);
        double Once()
        {
            using var inner = NewDisposeScope();
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            for (int i = 0; i < 8; i++) _ = a.matmul(b)[0, 0].item<float>();
            return (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        }
        return 8 * 2.0 * 1024 * 1024 * 1024 / Best(repeats, Once, out _) / 1e9;
    }

    public static double MatmulOnce()
    {
        using var scope = NewDisposeScope();
        var a = randn(1024, 1024);
        var b = randn(1024, 1024);
        var sw = Stopwatch.StartNew();
        var c = a.matmul(b);
        _ = c[0, 0].item<float>();
        return sw.Elapsed.TotalSeconds;
    }

    private static double ForwardOnce(CausalLM model)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = randint(0, model.Config.VocabSize, [Batch, Tokens], dtype: int64);
        var sw = Stopwatch.StartNew();
        var logits = model.Forward(ids);
        _ = logits[0, 0, 0].item<float>();
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Best of <paramref name="repeats"/> timings after one warm-up (the least disturbed run).</summary>
    public static double Best(int repeats, Func<double> once, out double median)
    {
        once();
        var times = Enumerable.Range(0, repeats).Select(_ => once()).Order().ToArray();
        median = times[times.Length / 2];
        return times[0];
    }

    private static void GenerationRate(string dir, int repeats)
    {
        using var loaded = ModelLoader.Load(Path.Combine(dir, "stories260K.bin"));
        var tokenizer = TokenizerLoader.Load(Path.Combine(dir, "tok512.bin"));
        var options = new GenerationOptions { Steps = 256, Temperature = 0, StopAtEos = false };
        double best = Best(repeats, () =>
        {
            var sw = Stopwatch.StartNew();
            var result = KeyValueLab.Inference.Generator.Generate(loaded.Model, tokenizer, "", options);
            return sw.Elapsed.TotalSeconds / Math.Max(1, result.Tokens.Count - 1);
        }, out double median);
        Console.WriteLine($"stories260K greedy generation, 256 steps, KV cache: {1 / best:F0} tokens/s (median run {1 / median:F0} tokens/s)");
    }
}

/// <summary>The forward pass and the matmul it is compared with, under BenchmarkDotNet.</summary>
[MemoryDiagnoser]
[SimpleJob(warmupCount: 2, iterationCount: 8)]
public class ForwardBenchmarks
{
    private LoadedModel? _model;
    private Tensor? _ids, _a, _b;

    [GlobalSetup]
    public void Setup()
    {
        TorchRuntime.EnsureLoaded(CachePaths.Root);
        _model = ModelLoader.Create(RuntimeBenchmark.Gpt2SmallConfig, seed: 0);
        _model.Model.eval();
        _ids = randint(0, _model.Config.VocabSize, [RuntimeBenchmark.Batch, RuntimeBenchmark.Tokens], dtype: int64);
        _a = randn(1024, 1024);
        _b = randn(1024, 1024);
    }

    [Benchmark(Baseline = true)]
    public float Matmul1024()
    {
        using var scope = NewDisposeScope();
        return _a!.matmul(_b!)[0, 0].item<float>();
    }

    [Benchmark]
    public float Gpt2SmallForward()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return _model!.Model.Forward(_ids!)[0, 0, 0].item<float>();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _model?.Dispose();
        _ids?.Dispose(); _a?.Dispose(); _b?.Dispose();
    }
}
