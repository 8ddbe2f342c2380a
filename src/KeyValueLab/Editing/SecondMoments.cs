using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>A module whose inputs' second moment an editor needs, e.g. layer 5's value module.</summary>
/// <param name="Layer">The layer.</param>
/// <param name="Point">Where the inputs are read.</param>
/// <param name="Kind">What the input is, for the cache key: <c>value-input</c> (memory coefficients) or <c>key-input</c> (FFN input).</param>
public sealed record MomentPoint(int Layer, string Kind, HookPoint Point);

/// <summary>
/// Uncentred second moments C = E[x xᵀ] of a module's inputs over a text corpus (ROME's mom2 statistics),
/// cached on disk under <c>{cacheDir}/{model fingerprint}/{kind}-L{layer}-{corpus}-n{samples}.bin</c> so they
/// are computed once per (model, layer, corpus, sample count).
/// </summary>
/// <remarks>
/// The corpus is text the product has at run time: <c>generated</c> = samples the model draws itself
/// (temperature 1, no truncation, seeded, from BOS or end-of-text), or a UTF-8 file with one sample per
/// non-empty line. ROME used 100,000 Wikipedia texts, which we do not ship; the sample count is a parameter
/// (small counts make statistics in seconds) and is recorded with the cache entry and in params.json.
/// </remarks>
public sealed class SecondMoments
{
    private const ulong Seed = 20240219;

    public SecondMoments(string corpus, int samples, int sampleTokens, string cacheDir)
    {
        if (samples < 1) throw new ArgumentOutOfRangeException(nameof(samples), "at least one sample");
        if (sampleTokens < 2) throw new ArgumentOutOfRangeException(nameof(sampleTokens), "at least two tokens per sample");
        (Corpus, Samples, SampleTokens, CacheDir) = (corpus, samples, sampleTokens, cacheDir);
        if (corpus != "generated" && !File.Exists(corpus)) throw new InputException(corpus, "statistics corpus: no such file (use \"generated\" or a text file)");
    }

    public string Corpus { get; }
    public int Samples { get; }
    public int SampleTokens { get; }
    public string CacheDir { get; }

    /// <summary>
    /// A folder of ROME/MEMIT/AlphaEdit <c>layer_stats</c> files (<see cref="LayerStatsFile"/>), searched with its
    /// subfolders before the cache: a point whose module (its state-dict name without <c>.weight</c>) has a file
    /// <c>{module}_*mom2*.npz</c> there takes E[x xᵀ] from it instead of computing it. Null: none.
    /// </summary>
    public string? LayerStatsDir { get; init; }

    /// <summary>What was read from the cache and what was computed, for logs.</summary>
    public List<string> Log { get; } = [];

    /// <summary>Where a computation reports its samples as it runs (counter <c>statistics</c>). Null: nowhere.</summary>
    public IProgress<WorkProgress>? Progress { get; init; }

    /// <summary>
    /// Where a computation says, while it runs, how long it will take: one line after its first batch (the measured
    /// warm-up), before the rest starts (<see cref="EstimateLine"/>). Null: nowhere.
    /// </summary>
    public Action<string>? Notice { get; init; }

    /// <summary>An estimate above this names the options that make statistics shorter.</summary>
    public static readonly TimeSpan LongRun = TimeSpan.FromMinutes(10);

    /// <summary>
    /// "statistics for L5 value-input: 100000 generated samples, about 2 h 13 min (the first 32 took 2.6 s)", and above
    /// <see cref="LongRun"/> the ways to make it shorter: fewer samples (with their own estimate) or statistics made before.
    /// </summary>
    public static string EstimateLine(string what, int samples, int measuredSamples, TimeSpan measured)
    {
        double perSample = measured.TotalSeconds / measuredSamples;
        var total = TimeSpan.FromSeconds(perSample * samples);
        string line = string.Create(CultureInfo.InvariantCulture,
            $"statistics for {what}: {samples} samples, about {Duration(total)} (the first {measuredSamples} took {measured.TotalSeconds:F1} s)");
        if (total <= LongRun) return line;
        int fit = (int)Math.Max(measuredSamples, Math.Floor(LongRun.TotalSeconds / 2 / perSample / 100) * 100);
        return line + string.Create(CultureInfo.InvariantCulture,
            $"; shorter: --stats-samples {fit} (about {Duration(TimeSpan.FromSeconds(perSample * fit))}), or statistics made before: the same --stats-dir cache, or ROME/MEMIT layer_stats .npz files (--layer-stats DIR)");
    }

    private static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalHours} h {t.Minutes} min")
        : t.TotalMinutes >= 1 ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalMinutes:F1} min")
        : string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:F0} s");

    /// <summary>Default cache folder: <c>stats</c> under the user's KeyValueLab cache (<see cref="CachePaths"/>).</summary>
    public static string DefaultCacheDir() => CachePaths.Of("stats");

    /// <summary>C for every point <c>[dim, dim]</c> (float32), from the cache or computed in one pass over the corpus.</summary>
    public IReadOnlyList<Tensor> Get(CausalLM model, ITokenizer tokenizer, IReadOnlyList<MomentPoint> points)
    {
        string fingerprint = ParameterHash.Sha256(model)[..16];
        string corpusId = CorpusId();
        var result = new Tensor?[points.Count];
        Counts.Clear();
        var missing = new List<int>();
        for (int i = 0; i < points.Count; i++)
        {
            if (LayerStatsFor(points[i]) is { } imported)
            {
                result[i] = LayerStatsFile.ReadMoment(imported);
                Log.Add($"statistics {points[i].Kind} L{points[i].Layer}: layer_stats {imported}");
                continue;
            }
            string file = CacheFile(fingerprint, points[i], corpusId);
            result[i] = TryRead(file, out long tokens);
            if (result[i] is null) missing.Add(i);
            else
            {
                Counts[i] = tokens;
                Log.Add($"statistics {points[i].Kind} L{points[i].Layer}: cached {file}");
            }
        }
        if (missing.Count > 0)
        {
            var computed = Compute(model, tokenizer, [.. missing.Select(i => points[i])], out long tokens);
            for (int j = 0; j < missing.Count; j++)
            {
                var p = points[missing[j]];
                string file = CacheFile(fingerprint, p, corpusId);
                Write(file, computed[j], new JsonObject
                {
                    ["model"] = fingerprint, ["layer"] = p.Layer, ["kind"] = p.Kind, ["corpus"] = corpusId,
                    ["samples"] = Samples, ["tokens"] = tokens, ["dim"] = computed[j].shape[0],
                });
                Log.Add($"statistics {p.Kind} L{p.Layer}: computed over {Samples} samples ({tokens} tokens) → {file}");
                result[missing[j]] = computed[j];
                Counts[missing[j]] = tokens;
            }
        }
        return [.. result.Select(t => t!)];
    }

    /// <summary>Rows (tokens) behind each moment of the last <see cref="Get"/>, by point index; absent for imported files.</summary>
    private Dictionary<int, long> Counts { get; } = [];

    /// <summary>
    /// Writes the moments of <paramref name="points"/> (from the cache, or computed) as ROME/MEMIT/AlphaEdit
    /// <c>layer_stats</c> files into <paramref name="folder"/>, one <see cref="LayerStatsFile.FileName"/> per module.
    /// Returns the paths written.
    /// </summary>
    public IReadOnlyList<string> ExportLayerStats(CausalLM model, ITokenizer tokenizer, IReadOnlyList<MomentPoint> points, string folder)
    {
        var moments = Get(model, tokenizer, points);
        var written = new List<string>();
        for (int i = 0; i < points.Count; i++)
        {
            using var moment = moments[i];
            if (!Counts.TryGetValue(i, out long count)) throw new InvalidOperationException($"{points[i].Point.Name}: imported from a layer_stats file already");
            string path = Path.Combine(folder, LayerStatsFile.FileName(ModuleName(points[i]), Samples));
            LayerStatsFile.Write(path, moment, count);
            written.Add(path);
        }
        return written;
    }

    private static string ModuleName(MomentPoint p) => p.Point.Name.EndsWith(".weight", StringComparison.Ordinal) ? p.Point.Name[..^".weight".Length] : p.Point.Name;

    private string? LayerStatsFor(MomentPoint p)
    {
        if (LayerStatsDir is null) return null;
        if (!Directory.Exists(LayerStatsDir)) throw new InputException(LayerStatsDir, "layer_stats folder: no such folder");
        var found = Directory.EnumerateFiles(LayerStatsDir, ModuleName(p) + "_*mom2*.npz", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        return found.Count switch
        {
            0 => null,
            1 => found[0],
            _ => throw new InputException(LayerStatsDir, $"{found.Count} layer_stats files for {ModuleName(p)}; keep one"),
        };
    }

    private string CorpusId()
    {
        if (Corpus == "generated") return $"generated-t{SampleTokens}";
        using var sha = SHA256.Create();
        using var stream = File.OpenRead(Corpus);
        string hash = Convert.ToHexStringLower(sha.ComputeHash(stream))[..12];
        return $"file-{hash}-t{SampleTokens}";
    }

    private string CacheFile(string fingerprint, MomentPoint p, string corpusId) =>
        Path.Combine(CacheDir, fingerprint, $"{p.Kind}-L{p.Layer}-{corpusId}-n{Samples}.bin");

    private Tensor[] Compute(CausalLM model, ITokenizer tokenizer, IReadOnlyList<MomentPoint> points, out long tokens)
    {
        var sums = new Tensor?[points.Count];
        long count = 0;
        Tensor? rowMask = null;  // [B*T] bool: which positions of the current pass are real tokens
        var hooks = new List<IDisposable>();
        try
        {
            for (int i = 0; i < points.Count; i++)
            {
                int k = i;
                hooks.Add(points[i].Point.Install((input, output) =>
                {
                    using var scope = NewDisposeScope();
                    var x = input.reshape(-1, input.shape[^1]).to(ScalarType.Float64);
                    if (rowMask is not null) x = x.index(rowMask);
                    // Accumulated in place (addmm_): a separate xᵀx would be one more [dim, dim] float64 matrix per batch
                    // (0.97 GB at Llama-2-7B's d_ff of 11,008).
                    if (sums[k] is null) sums[k] = x.t().matmul(x).DetachFromDisposeScope();
                    else sums[k]!.addmm_(x.t(), x);
                    return output;
                }));
            }
            // A text corpus needs nothing above the highest layer read: its block ends the forward pass (no later layer,
            // final norm or logits over the vocabulary runs). Generated samples need the whole model to draw each token.
            if (Corpus != "generated")
            {
                int last = points.Max(p => p.Layer);
                hooks.Add(HookPoint.BlockOutput(model, last).Install((_, _) => throw new StopForward()));
            }
            using var noGrad = no_grad();
            var pace = new Pace(this, string.Join(", ", points.Select(p => $"L{p.Layer} {p.Kind}")));
            if (Corpus == "generated") count = RunGenerated(model, tokenizer, m => rowMask = m, pace);
            else count = RunFile(model, tokenizer, m => { rowMask?.Dispose(); rowMask = m?.DetachFromDisposeScope(); }, pace);
        }
        finally
        {
            foreach (var h in hooks) h.Dispose();
            rowMask?.Dispose();
        }
        tokens = count;
        var moments = new Tensor[points.Count];
        for (int i = 0; i < points.Count; i++)
        {
            using var s = sums[i] ?? throw new InvalidOperationException("no corpus token reached the statistics hook");
            moments[i] = s.div_(count).to(ScalarType.Float32).DetachFromDisposeScope();  // in place: no second float64 matrix
        }
        return moments;
    }

    /// <summary>Samples <see cref="Samples"/> texts of <see cref="SampleTokens"/> tokens from the model, 32 at a time, all rows the same length.</summary>
    /// <summary>Reports each batch's samples, and after the first of several batches the estimate of the whole run.</summary>
    private sealed class Pace(SecondMoments owner, string what)
    {
        private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();

        public void Done(int done, int total)
        {
            if (done == 0) owner.Progress?.Report(new WorkProgress("statistics", 0, total, what));
            else
            {
                if (_clock.IsRunning && done < total) owner.Notice?.Invoke(EstimateLine(what, total, done, _clock.Elapsed));
                _clock.Stop();
                owner.Progress?.Report(new WorkProgress("statistics", done, total, what));
            }
        }
    }

    private long RunGenerated(CausalLM model, ITokenizer tokenizer, Action<Tensor?> setMask, Pace pace)
    {
        setMask(null);
        int start = tokenizer.BosId is int bos && PromptEncoding.UsesBos(model) ? bos : tokenizer.EosId ?? tokenizer.BosId ?? 0;
        int length = Math.Min(SampleTokens, model.Config.MaxPositions);
        using var generator = new torch.Generator(Seed);
        long tokens = 0;
        pace.Done(0, Samples);
        for (int done = 0; done < Samples; done += 32)
        {
            int b = Math.Min(32, Samples - done);
            using var scope = NewDisposeScope();
            using var cache = model.NewCache();
            var next = full(b, 1, start, ScalarType.Int64);
            for (int t = 0; t < length; t++)
            {
                using var step = NewDisposeScope();
                var logits = model.Forward(next, cache: cache)[.., -1];                          // [B, V]
                var probs = nn.functional.softmax(logits, -1);
                next = multinomial(probs, 1, replacement: false, generator: generator).MoveToOuterDisposeScope();  // [B, 1]
                tokens += b;
            }
            pace.Done(done + b, Samples);
        }
        return tokens;
    }

    private long RunFile(CausalLM model, ITokenizer tokenizer, Action<Tensor?> setMask, Pace pace)
    {
        var texts = File.ReadLines(Corpus).Where(l => !string.IsNullOrWhiteSpace(l)).Take(Samples).ToList();
        if (texts.Count == 0) throw new InputException(Corpus, "the statistics corpus has no non-empty lines");
        int length = Math.Min(SampleTokens, model.Config.MaxPositions);
        long tokens = 0;
        pace.Done(0, texts.Count);
        for (int i = 0; i < texts.Count; i += 16)
        {
            using var scope = NewDisposeScope();
            var seqs = texts.Skip(i).Take(16).Select(t => (IReadOnlyList<int>)PromptEncoding.Encode(model, tokenizer, t).Take(length).ToArray())
                .Where(s => s.Count > 0).ToArray();
            if (seqs.Length == 0) { pace.Done(Math.Min(i + 16, texts.Count), texts.Count); continue; }
            using var batch = TokenBatch.RightPadded(seqs, tokenizer.EosId ?? 0);
            setMask(batch.AttentionMask.reshape(-1).to(ScalarType.Bool));
            try { model.Forward(batch.InputIds, batch.AttentionMask, batch.PositionIds); }
            catch (StopForward) { }
            tokens += seqs.Sum(s => s.Count);
            pace.Done(Math.Min(i + 16, texts.Count), texts.Count);
        }
        setMask(null);
        return tokens;
    }

    /// <summary>Thrown by the hook after the highest layer a text-corpus pass reads, to end that forward pass there.</summary>
    private sealed class StopForward : Exception;

    private static Tensor? TryRead(string file, out long tokens)
    {
        tokens = 0;
        if (!File.Exists(file)) return null;
        try
        {
            using var stream = File.OpenRead(file);
            using var reader = new BinaryReader(stream);
            int headerLength = reader.ReadInt32();
            var header = JsonNode.Parse(Encoding.UTF8.GetString(reader.ReadBytes(headerLength)))!;
            long dim = header["dim"]!.GetValue<long>();
            tokens = header["tokens"]!.GetValue<long>();
            long offset = stream.Position;
            if (stream.Length - offset < dim * dim * 4) return null;
            // Read straight into the tensor's memory: no managed copies of a [dim, dim] matrix (0.48 GB at d_ff 11,008).
            var moment = empty([dim, dim], ScalarType.Float32).DetachFromDisposeScope();
            try { Checkpoints.TensorBytes.ReadInto(stream.SafeFileHandle, offset, moment, file, "mom2"); }
            catch { moment.Dispose(); throw; }
            return moment;
        }
        catch (Exception e) when (e is IOException or JsonException or EndOfStreamException or NullReferenceException or InvalidOperationException or InputException)
        {
            return null;  // a damaged cache entry is recomputed
        }
    }

    private static void Write(string file, Tensor moment, JsonObject header)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        string tmp = file + $".{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";  // unique per writer: two threads of one process may compute the same entry
        byte[] head = Encoding.UTF8.GetBytes(header.ToJsonString());
        using (var contiguous = moment.contiguous())
        using (var stream = File.Create(tmp))
        {
            using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
            {
                writer.Write(head.Length);
                writer.Write(head);
            }
            // Straight from the tensor's memory, in chunks: no managed copies of the matrix (two of 0.48 GB at d_ff 11,008).
            Checkpoints.TensorBytes.WriteTo(stream, contiguous);
        }
        File.Move(tmp, file, overwrite: true);
    }
}
