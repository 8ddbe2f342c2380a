using System.Text;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Inference;

/// <summary>Settings of one generation run; the defaults are llama2.c <c>run</c>'s, with a fixed seed.</summary>
public sealed record GenerationOptions
{
    /// <summary>
    /// Positions to run, prompt (and BOS) included, as llama2.c's <c>-n</c>: the output holds
    /// <c>Steps + 1</c> tokens counting the first (BOS) one, fewer when a stop token comes first.
    /// 0, negative, or more than the model's context means the whole context.
    /// </summary>
    public int Steps { get; init; } = 256;

    /// <summary>0 = greedy.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>0 = off.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus mass; ≤ 0 or ≥ 1 = off.</summary>
    public float TopP { get; init; } = 0.9f;

    /// <summary>Seed of the sampler's generator (see <see cref="Sampler"/>).</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Prepend BOS to the prompt; null = <see cref="PromptEncoding.UsesBos"/>.</summary>
    public bool? AddBos { get; init; }

    /// <summary>
    /// Stop when the model produces EOS, or BOS (the start of a new document: llama2.c stops there).
    /// The stop token is neither printed nor kept.
    /// </summary>
    public bool StopAtEos { get; init; } = true;

    /// <summary>Decode with the key/value cache (else every step re-reads the whole sequence: for tests).</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>Keep the logits of every position run, in <see cref="GenerationResult.Logits"/>.</summary>
    public bool KeepLogits { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting that is not finite or out of its range (by its
    /// <c>kvlab generate</c> option's name without the dashes).</summary>
    public void Validate()
    {
        // Written so that NaN fails every check: a comparison with NaN is false.
        if (!(float.IsFinite(Temperature) && Temperature >= 0)) throw new ArgumentException($"temperature {Temperature} must be a finite number >= 0");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p {TopP} must be in (0, 1]");
        if (TopK < 0) throw new ArgumentException($"top-k {TopK} must be >= 0");
    }
}

/// <summary>What one generation run produced.</summary>
/// <param name="Bytes">
/// The prompt followed by the generated text, as the bytes <c>kvlab generate</c> (like llama2.c <c>run</c>)
/// writes before its final newline: each token's <c>DecodeTokenBytes(previous, next)</c>, concatenated.
/// </param>
/// <param name="Tokens">Every token of the sequence: BOS (if any), the prompt, then the generated tokens.</param>
/// <param name="PromptLength">How many of <paramref name="Tokens"/> were forced by the prompt (BOS included).</param>
/// <param name="StoppedAtEos">True when a stop token ended the run before <see cref="GenerationOptions.Steps"/>.</param>
/// <param name="Logits">When asked for: the logits <c>[vocab]</c> at each position run, in order.</param>
public sealed record GenerationResult(byte[] Bytes, IReadOnlyList<int> Tokens, int PromptLength, bool StoppedAtEos, IReadOnlyList<float[]>? Logits)
{
    /// <summary><see cref="Bytes"/> as text (UTF-8; invalid sequences become U+FFFD): what the streaming callback received.</summary>
    public string Text => Encoding.UTF8.GetString(Bytes);

    /// <summary>Exactly what the CLI writes to stdout: <see cref="Bytes"/> and one newline.</summary>
    public byte[] StdoutBytes => [.. Bytes, (byte)'\n'];

    /// <summary><see cref="StdoutBytes"/> as text.</summary>
    public string Stdout => Text + "\n";

    /// <summary>The generated tokens (after the prompt).</summary>
    public IReadOnlyList<int> NewTokens => [.. Tokens.Skip(PromptLength)];
}

/// <summary>Greedy continuation of one prompt of a batch.</summary>
/// <param name="PromptIds">The prompt's ids as fed (BOS included when one was added).</param>
/// <param name="NewIds">The generated ids, without the stop token.</param>
/// <param name="Text">The generated text alone (<c>Decode(NewIds)</c>).</param>
public sealed record GreedyContinuation(int[] PromptIds, int[] NewIds, string Text);

/// <summary>
/// Text generation with the key/value cache. One prompt at a time with any sampler and a streaming
/// callback (the CLI), or many prompts at once, greedy, left-padded (evaluation).
/// </summary>
public static class Generator
{
    /// <summary>
    /// Runs the model over <paramref name="prompt"/> and continues it, following llama2.c's loop: at
    /// each position the next token is the prompt's while the prompt lasts, then a sampled one; each
    /// token after the first is written as <c>DecodeTokenBytes(previous, next)</c>. BOS is never printed; a
    /// first prompt token that is not BOS is. A piece that is one ASCII control byte other than
    /// whitespace is not printed (llama2.c's safe_printf); unlike safe_printf, single bytes ≥ 0x80 are
    /// kept, so characters split over byte tokens come out whole. <paramref name="onText"/> receives the
    /// text as it grows, decoded incrementally so a character split over tokens arrives whole.
    /// </summary>
    public static GenerationResult Generate(CausalLM model, ITokenizer tokenizer, string prompt, GenerationOptions? options = null, Action<string>? onText = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new GenerationOptions();
        int[] ids = PromptEncoding.Encode(model, tokenizer, prompt ?? "", options.AddBos);
        if (ids.Length == 0)
        {
            // An empty prompt without BOS (GPT-2): start from the end-of-text token, as Hugging Face does.
            int start = tokenizer.BosId ?? tokenizer.EosId ?? throw new ArgumentException("the prompt is empty and the tokenizer has no BOS or EOS token to start from", nameof(prompt));
            ids = [start];
        }
        return GenerateFromIds(model, tokenizer, ids, options, onText);
    }

    /// <summary>As <see cref="Generate"/>, from prompt ids (BOS included if wanted); at least one id.</summary>
    public static GenerationResult GenerateFromIds(CausalLM model, ITokenizer tokenizer, IReadOnlyList<int> promptIds, GenerationOptions? options = null, Action<string>? onText = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(promptIds);
        if (promptIds.Count == 0) throw new ArgumentException("generation needs at least one prompt token", nameof(promptIds));
        options ??= new GenerationOptions();
        int maxPositions = model.Config.MaxPositions;
        int steps = options.Steps <= 0 || options.Steps > maxPositions ? maxPositions : options.Steps;
        int promptLength = promptIds.Count;
        var sampler = new Sampler(options.Temperature, options.TopK, options.TopP, options.Seed);
        var stopIds = new HashSet<int>();
        if (options.StopAtEos)
        {
            if (tokenizer.EosId is int eos) stopIds.Add(eos);
            if (tokenizer.BosId is int bos) stopIds.Add(bos);
        }

        var output = new List<byte>();
        var utf8 = Encoding.UTF8.GetDecoder();
        void Emit(byte[] piece)
        {
            if (piece.Length == 0 || (piece.Length == 1 && piece[0] < 0x80 && IsUnprintable(piece[0]))) return;
            output.AddRange(piece);
            if (onText is null) return;
            var chars = new char[utf8.GetCharCount(piece, flush: false)];
            utf8.GetChars(piece, chars, flush: false);
            if (chars.Length > 0) onText(new string(chars));
        }

        var sequence = new List<int>(steps + 1) { promptIds[0] };
        // The first token has no predecessor: decode it as if after BOS (SentencePiece drops its dummy-prefix space).
        if (tokenizer.BosId != promptIds[0]) Emit(tokenizer.DecodeTokenBytes(tokenizer.BosId ?? -1, promptIds[0]));

        var kept = options.KeepLogits ? new List<float[]>() : null;
        using var cache = options.UseCache ? model.NewCache() : null;
        using var noGrad = torch.no_grad();

        // With the cache, every forced position runs in one forward pass; only the rows needed are copied out.
        float[]?[] prefill = [];
        if (cache is not null)
        {
            int n = Math.Min(promptLength, steps);
            long[] prefix = [.. promptIds.Take(n).Select(i => (long)i)];
            prefill = ForwardRows(model, prefix, cache, keep: p => options.KeepLogits || p == promptLength - 1);
        }

        bool stopped = false;
        int pos = 0, token = promptIds[0];
        while (pos < steps)
        {
            bool forced = pos < promptLength - 1;
            float[]? logits;
            if (cache is not null)
                logits = pos < prefill.Length ? prefill[pos] : ForwardRows(model, [token], cache, keep: _ => true)[0];
            else
                logits = forced && !options.KeepLogits ? null : ForwardRows(model, [.. sequence.Select(i => (long)i)], null, keep: p => p == pos)[pos];
            kept?.Add(logits!);

            int next = forced ? promptIds[pos + 1] : sampler.Sample(logits!);
            pos++;
            if (!forced && stopIds.Contains(next)) { stopped = true; break; }
            Emit(tokenizer.DecodeTokenBytes(token, next));
            sequence.Add(next);
            token = next;
        }
        return new GenerationResult([.. output], sequence, Math.Min(promptLength, sequence.Count), stopped, kept);
    }

    /// <summary>
    /// Greedy continuations of <paramref name="prompts"/>, up to <paramref name="maxNewTokens"/> each,
    /// a row stopping at EOS (or BOS, as <see cref="GenerationOptions.StopAtEos"/>) when <paramref name="stopAtEos"/>.
    /// Same tokens as one prompt at a time. <see cref="GreedyContinuation.Text"/> is the generated text alone.
    /// </summary>
    public static IReadOnlyList<GreedyContinuation> GreedyBatch(
        CausalLM model, ITokenizer tokenizer, IReadOnlyList<string> prompts, int maxNewTokens,
        int batchSize = 8, bool? addBos = null, bool stopAtEos = true)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prompts);
        var encoded = new int[prompts.Count][];
        for (int i = 0; i < prompts.Count; i++)
        {
            encoded[i] = PromptEncoding.Encode(model, tokenizer, prompts[i], addBos);
            if (encoded[i].Length == 0)
                encoded[i] = [tokenizer.BosId ?? tokenizer.EosId ?? throw new ArgumentException($"prompt {i} is empty and the tokenizer has no BOS or EOS token to start from", nameof(prompts))];
        }
        var stopIds = new List<int>();
        if (stopAtEos && tokenizer.EosId is int eos) stopIds.Add(eos);
        if (stopAtEos && tokenizer.BosId is int bos) stopIds.Add(bos);
        var newIds = GreedyBatchIds(model, encoded, maxNewTokens, stopIds, batchSize, padId: tokenizer.EosId ?? 0);
        return [.. encoded.Select((p, i) => new GreedyContinuation(p, newIds[i], tokenizer.Decode(newIds[i])))];
    }

    /// <summary>
    /// Greedy continuation ids of non-empty <paramref name="prompts"/>: batches are left-padded with
    /// position ids counted from each row's first real token; a row ends at a stop id (not kept), after
    /// <paramref name="maxNewTokens"/>, or at the model's last position.
    /// </summary>
    public static IReadOnlyList<int[]> GreedyBatchIds(
        CausalLM model, IReadOnlyList<IReadOnlyList<int>> prompts, int maxNewTokens,
        IReadOnlyCollection<int> stopIds, int batchSize = 8, int padId = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(stopIds);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        for (int i = 0; i < prompts.Count; i++)
        {
            if (prompts[i].Count == 0) throw new ArgumentException($"prompt {i} has no tokens", nameof(prompts));
            if (prompts[i].Count > model.Config.MaxPositions)
                throw new ArgumentException($"prompt {i}: {prompts[i].Count} tokens exceed the model's {model.Config.MaxPositions} positions", nameof(prompts));
        }

        var results = new int[prompts.Count][];
        using var noGrad = torch.no_grad();
        for (int start = 0; start < prompts.Count; start += batchSize)
        {
            var rows = prompts.Skip(start).Take(batchSize).ToArray();
            var continued = GreedyOneBatch(model, rows, maxNewTokens, stopIds, padId);
            for (int r = 0; r < rows.Length; r++) results[start + r] = continued[r];
        }
        return results;
    }

    private static int[][] GreedyOneBatch(CausalLM model, IReadOnlyList<int>[] prompts, int maxNew, IReadOnlyCollection<int> stopIds, int padId)
    {
        int b = prompts.Length;
        var generated = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        if (maxNew == 0) return [.. generated.Select(g => g.ToArray())];
        int maxPositions = model.Config.MaxPositions;
        var done = new bool[b];
        var nextPosition = prompts.Select(p => (long)p.Count).ToArray();
        var maskRows = prompts.Select(p => new List<long>()).ToArray(); // the attention mask so far, per row

        using var cache = model.NewCache();
        float[] last; // [B * V] logits at the last column
        int vocab;
        using (var scope = torch.NewDisposeScope())
        {
            using var batch = TokenBatch.LeftPadded(prompts, padId);
            for (int r = 0; r < b; r++)
                for (int c = 0; c < batch.Width; c++) maskRows[r].Add(c >= batch.Width - batch.Lengths[r] ? 1 : 0);
            var logits = model.Forward(batch.InputIds, batch.AttentionMask, batch.PositionIds, cache); // [B, T, V]
            vocab = (int)logits.shape[2];
            last = logits.select(1, -1).contiguous().data<float>().ToArray();
        }

        while (true)
        {
            var input = new long[b];
            var positions = new long[b];
            for (int r = 0; r < b; r++)
            {
                if (!done[r])
                {
                    int next = Sampler.Argmax(last.AsSpan(r * vocab, vocab));
                    if (stopIds.Contains(next)) done[r] = true;
                    else
                    {
                        generated[r].Add(next);
                        if (generated[r].Count >= maxNew || nextPosition[r] >= maxPositions) done[r] = true;
                        input[r] = next;
                    }
                }
                if (done[r]) input[r] = padId;
                // A finished row keeps feeding padding at its last position, masked out, so its
                // positions never run past the model's context.
                positions[r] = Math.Min(nextPosition[r], maxPositions - 1);
                maskRows[r].Add(done[r] ? 0 : 1);
                if (!done[r]) nextPosition[r]++;
            }
            if (done.All(d => d)) break;

            using var scope = torch.NewDisposeScope();
            int width = maskRows[0].Count;
            var ids = tensor(input, [b, 1], dtype: ScalarType.Int64);
            var mask = tensor(maskRows.SelectMany(m => m).ToArray(), [b, width], dtype: ScalarType.Int64);
            var pos = tensor(positions, [b, 1], dtype: ScalarType.Int64);
            var logits = model.Forward(ids, mask, pos, cache); // [B, 1, V]
            last = logits.contiguous().data<float>().ToArray();
        }
        return [.. generated.Select(g => g.ToArray())];
    }

    // C's isprint || isspace in the "C" locale.
    private static bool IsUnprintable(byte b) => !(b is >= 0x20 and < 0x7F || b is (byte)'\t' or (byte)'\n' or (byte)'\v' or (byte)'\f' or (byte)'\r');

    /// <summary>Runs <paramref name="ids"/> as one row (appending to <paramref name="cache"/>) and copies out the logit rows <paramref name="keep"/> selects.</summary>
    private static float[]?[] ForwardRows(CausalLM model, long[] ids, KvCache? cache, Func<int, bool> keep)
    {
        using var scope = torch.NewDisposeScope();
        var input = tensor(ids, [1, ids.Length], dtype: ScalarType.Int64);
        var logits = model.Forward(input, null, null, cache).select(0, 0); // [T, V]
        var rows = new float[]?[ids.Length];
        for (int p = 0; p < ids.Length; p++)
            if (keep(p)) rows[p] = logits.select(0, p).contiguous().data<float>().ToArray();
        return rows;
    }
}
