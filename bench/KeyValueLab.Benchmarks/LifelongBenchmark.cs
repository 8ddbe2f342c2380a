using System.Diagnostics;
using KeyValueLab.Editing;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Benchmarks;

/// <summary>
/// The per-layer closed-form part of AlphaEdit (values) and Key-AlphaEdit (keys) at GPT-2 XL's shape (d_model 1600,
/// d_ff 6400): one batch of n new keys solved against P and the earlier edits' key store (<see cref="NullSpaceProjector"/>:
/// <c>Delta</c> then <c>AddHistory</c>), timed, with its ratio to the time its FLOP would take at the matmul rate of the same
/// run, and the bytes P and the key store hold. The target optimisation (MEMIT's z, the forward/backward passes) is not in
/// these rows; P is built from a synthetic second moment whose spectrum puts the chosen share of directions below the
/// threshold (AlphaEdit reports about 70% kept on Llama-3-8B), and the eigendecomposition, done once per model, is timed apart
/// for the key row (<c>--no-eig</c>: not at all); the value row always builds P from its kept basis (its 6400² decomposition
/// takes minutes on a loaded 2-core machine).
/// </summary>
internal static class LifelongBenchmark
{
    public static int Run(string[] args)
    {
        int n = Int(args, "--n", 100), history = Int(args, "--history", 1900), repeats = Int(args, "--repeats", 2);
        double kept = double.TryParse(Option(args, "--kept"), System.Globalization.CultureInfo.InvariantCulture, out double k) ? k : 0.7;
        torch.manual_seed(0);
        double matmul = RuntimeBenchmark.MatmulGflops(3);
        Console.WriteLine($"AlphaEdit per-layer update at GPT-2 XL shape: batch of {n} keys, {history} earlier keys in the store, {kept:P0} of directions kept; fp32 matmul {matmul:F1} GFLOP/s");
        // GPT-J (d_ff 16384, 6 layers 3-8): the same store computed from its formula, not measured (the eigendecomposition of
        // a 16384² float64 moment needs about 6 GB and minutes on this machine).
        long d = 16384, kk = (long)Math.Round(kept * d), edits = 2000;
        double bytes = 6.0 * 4 * (d * kk + kk * Math.Min(edits, kk));
        double dense = 6.0 * 2 * 4 * d * d;
        Console.WriteLine($"GPT-J values, 6 layers, {edits} edits (computed from the store's layout, not measured): {bytes / 1e9:F2} GB vs the reference's dense P + cache_c {dense / 1e9:F2} GB ({bytes / dense:P0})");
        if (args.Contains("--gptj-memory")) GptjStore(kept, (int)edits, dense);
        Row("Key-AlphaEdit (keys, c_fc)", 1600, 6400, n, history, kept, repeats, matmul, decompose: !args.Contains("--no-eig"));   // the cheap row first
        // The value side's 6400² decomposition takes minutes on a loaded 2-core machine and is done once per model, not per
        // edit: the row builds P from its kept basis directly (the same dense Û the decomposition would give).
        Row("AlphaEdit (values, c_proj)", 6400, 1600, n, history, kept, repeats, matmul, decompose: false);
        return 0;
    }

    private static void Row(string name, int dIn, int dOut, int n, int history, double keptShare, int repeats, double matmul, bool decompose)
    {
        using var scope = NewDisposeScope();
        int keep = (int)Math.Round(keptShare * dIn);
        // C = diag(λ): `keep` eigenvalues of 1e-3 (below the 2e-2 threshold), the rest 1. Û is then stored dense like any
        // other basis, so the timed products cost what they would with a rotated C (a rotation would only add set-up time).
        // Without the decomposition, Û is those `keep` columns of the identity: what it would return for this C, up to order and sign.
        var eigWatch = Stopwatch.StartNew();
        NullSpaceProjector Build()
        {
            if (!decompose) return new NullSpaceProjector(eye(dIn).narrow(1, 0, keep));
            var lambda = ones(dIn);
            lambda[TensorIndex.Slice(0, keep)] = tensor(1e-3f);
            return new NullSpaceProjector(diag(lambda), 2e-2);
        }
        using var projector = Build();
        string eig = decompose ? $"eigendecomposition once {eigWatch.Elapsed.TotalSeconds:F1} s" : "P from its basis (eigendecomposition not timed)";
        if (history > 0) projector.AddHistory(randn(history, dIn));
        var keys = randn(n, dIn);
        var residuals = randn(n, dOut);
        long k = projector.Kept;
        double best = RuntimeBenchmark.Best(repeats, () =>
        {
            using var inner = NewDisposeScope();
            var watch = Stopwatch.StartNew();
            projector.Delta(keys, residuals, 10);   // CPU tensors: the work is done when the call returns
            return watch.Elapsed.TotalSeconds;
        }, out double median);
        var addWatch = Stopwatch.StartNew();
        projector.AddHistory(keys);
        double add = addWatch.Elapsed.TotalSeconds;
        // Delta: Ûᵀ K, its Gram, the stored history's Gram (k×N or k×k), the k×k solve (Cholesky-class LU: 2/3 k³ + 2k² d_out),
        // Ûᵀ K · R, Û · Y. AddHistory: Ûᵀ K again (and a k×k Gram update once N > k).
        double flop = 2.0 * k * dIn * n + 2.0 * k * k * n + (history > k ? k * (double)k : 2.0 * k * k * history)
                      + 2.0 / 3 * k * k * k + 2.0 * k * k * dOut + 2.0 * k * n * dOut + 2.0 * dIn * k * dOut
                      + 2.0 * k * dIn * n + (history + n > k ? 2.0 * k * k * n : 0);
        double seconds = best + add;
        double ideal = flop / (matmul * 1e9);
        Console.WriteLine($"{name,-28}: d_in {dIn}, kept {k}; {seconds:F3} s per layer per batch (solve {best:F3}, median {median:F3}; store {add:F3}) = "
            + $"{seconds / n * 1e3:F2} ms per edit per layer; {flop / 1e9:F1} GFLOP → ratio {seconds / ideal:F2} to the matmul rate; "
            + $"P + store {projector.Bytes / 1e6:F0} MB (dense P + cache {2.0 * 4 * dIn * dIn / 1e6:F0} MB); {eig}; "
            + $"5 layers (GPT-2 XL's 13-17): {5 * seconds / n * 1e3:F1} ms per edit, by scaling this layer's time");
    }

    /// <summary>
    /// Measured: the peak extra resident memory of six GPT-J value-side stores (d_ff 16,384) as AlphaEdit keeps them across a
    /// sequence, each P held as its kept basis (Û, d × k) and fed <paramref name="edits"/> keys in batches of 100, against the
    /// reference's dense P and cache_c. Each Û is a random d × k matrix standing in for the decomposition's (same bytes); the
    /// eigendecomposition itself (float64, done once per layer before the sequence) is not part of the store and not measured.
    /// </summary>
    private static void GptjStore(double keptShare, int edits, double dense)
    {
        const int d = 16384, layers = 6, batch = 100;
        int keep = (int)Math.Round(keptShare * d);
        GC.Collect();
        long before = ProcessMemory.ResidentBytes();
        ProcessMemory.ResetPeak();
        var stores = new List<NullSpaceProjector>();
        try
        {
            for (int layer = 0; layer < layers; layer++)
            {
                using (var basis = randn(d, keep)) stores.Add(NullSpaceProjector.Adopting(basis));   // one copy of Û, not two
                for (int done = 0; done < edits; done += batch)
                {
                    using var keys = randn(batch, d);
                    stores[^1].AddHistory(keys);
                }
            }
            long peak = ProcessMemory.PeakResidentBytes(), held = stores.Sum(s => s.Bytes);
            Console.WriteLine($"GPT-J values, 6 layers, {edits} edits, measured: stores hold {held / 1e9:F2} GB; peak extra resident {(peak - before) / 1e9:F2} GB "
                + $"= {(peak - before) / dense:P0} of the reference's dense P + cache_c {dense / 1e9:F2} GB (goal <= 40%; includes building each Û, not the eigendecomposition)");
        }
        finally { foreach (var s in stores) s.Dispose(); }
    }

    private static int Int(string[] args, string name, int fallback) => int.TryParse(Option(args, name), out int v) ? v : fallback;

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
