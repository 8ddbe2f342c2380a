using System.Text;
using LLama;
using LLama.Common;
using LLama.Native;

namespace KeyValueLab.Tests.Gguf;

/// <summary>
/// llama.cpp, in-process through LLamaSharp 0.30.0 (CPU backend), as the reference for GGUF files: its tokenizer,
/// its next-token logits (fp32 KV cache, so the whole computation is fp32 for F32 weights) and greedy decoding.
/// </summary>
internal static class LlamaCpp
{
    private static readonly Lazy<bool> Configured = new(() =>
    {
        // llama.cpp logs every load to stderr; keep test output readable. Must be set before the library loads.
        NativeLibraryConfig.All.WithLogCallback((level, message) => { });
        return true;
    });

    private static ModelParams Params(string gguf, bool vocabOnly) => new(gguf)
    {
        VocabOnly = vocabOnly,
        ContextSize = 128,
        BatchSize = 128,
        UBatchSize = 128,
        Threads = 2,
        BatchThreads = 2,
        GpuLayerCount = 0,
        TypeK = GGMLType.GGML_TYPE_F32,
        TypeV = GGMLType.GGML_TYPE_F32,
        // The CPU flash-attention kernel rounds Q (and the softmax accumulation) to fp16; the plain path stays fp32.
        FlashAttention = false,
    };

    /// <summary>llama.cpp's tokens for each text, no BOS, special tokens not parsed unless asked (test-tokenizer-0 does not).</summary>
    public static int[][] Tokenize(string gguf, IEnumerable<string> texts, bool parseSpecial = false)
    {
        _ = Configured.Value;
        using var weights = LLamaWeights.LoadFromFile(Params(gguf, vocabOnly: true));
        return texts.Select(text => weights.Tokenize(text, false, parseSpecial, Encoding.UTF8).Select(t => (int)t).ToArray()).ToArray();
    }

    /// <summary>Logits <c>[position][vocab]</c> for <paramref name="ids"/>, all positions in one batch.</summary>
    public static float[][] Logits(string gguf, IReadOnlyList<int> ids)
    {
        _ = Configured.Value;
        var p = Params(gguf, vocabOnly: false);
        using var weights = LLamaWeights.LoadFromFile(p);
        using var context = weights.CreateContext(p);
        var batch = new LLamaBatch();
        for (int i = 0; i < ids.Count; i++) batch.Add((LLamaToken)ids[i], i, LLamaSeqId.Zero, true);
        var result = context.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode: {result}");
        return Enumerable.Range(0, ids.Count).Select(i => context.NativeHandle.GetLogitsIth(i).ToArray()).ToArray();
    }

    /// <summary>Greedy continuation: <paramref name="steps"/> tokens after <paramref name="prompt"/>, argmax of llama.cpp's logits (lowest id on ties).</summary>
    public static int[] Greedy(string gguf, IReadOnlyList<int> prompt, int steps)
    {
        _ = Configured.Value;
        var p = Params(gguf, vocabOnly: false);
        using var weights = LLamaWeights.LoadFromFile(p);
        using var context = weights.CreateContext(p);
        var output = new List<int>();
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Count; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        int pos = prompt.Count;
        for (int s = 0; s < steps; s++)
        {
            var result = context.Decode(batch);
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode: {result}");
            var logits = context.NativeHandle.GetLogitsIth(batch.TokenCount - 1);
            int best = 0;
            for (int v = 1; v < logits.Length; v++) if (logits[v] > logits[best]) best = v;
            output.Add(best);
            batch.Clear();
            batch.Add((LLamaToken)best, pos++, LLamaSeqId.Zero, true);
        }
        return output.ToArray();
    }
}
