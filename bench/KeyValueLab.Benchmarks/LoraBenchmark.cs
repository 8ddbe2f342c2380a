using System.Diagnostics;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Benchmarks;

/// <summary>
/// LoRA training speed and memory with an fp32 vs an NF4 base, on a random GPT-2-medium-shaped model (24 × 1024, vocab 50257).
/// One base per process (<c>lora --base fp32|nf4</c>), since peak RSS cannot be shared: prints the resident bytes of the
/// quantisable linears, process RSS after setup, peak RSS during training (reset via /proc/self/clear_refs), tokens/s.
/// </summary>
internal static class LoraBenchmark
{
    public const string Gpt2MediumConfig = """
        {"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":1024,"n_layer":24,"n_head":16,
         "activation_function":"gelu_new","layer_norm_epsilon":1e-5,"tie_word_embeddings":true}
        """;

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int mallopt(int param, int value);

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
        Console.WriteLine($"  RSS after setup: {Rss("VmRSS") / 1e6:F0} MB");

        using var optimizer = optim.AdamW(lora.Parameters(), 2e-4);
        var generator = new Generator(7);
        using var ids = randint(0, model.Config.VocabSize, [batch, tokens], generator: generator);
        // One warm-up step, then reset the peak and time the rest.
        Step(model, optimizer, ids, lora);
        ResetPeak();
        clock.Restart();
        for (int s = 0; s < steps; s++) Step(model, optimizer, ids, lora);
        double seconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"  {steps} steps of {batch}×{tokens} tokens: {steps * batch * tokens / seconds:F1} tokens/s; peak RSS while training {Rss("VmHWM") / 1e6:F0} MB");
    }

    private static void Step(CausalLM model, optim.Optimizer optimizer, Tensor ids, LoraModel lora)
    {
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        var logits = model.Forward(ids);
        var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, logits.shape[2]), ids[.., 1..].reshape(-1));
        loss.backward();
        nn.utils.clip_grad_norm_(lora.Parameters(), 0.3);
        optimizer.step();
    }

    private static long Rss(string field)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }

    private static void ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
